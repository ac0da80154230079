"""Train the noiser, the CT denoiser and the EDM denoiser on a time budget, run the reconstruction probe,
and append the four-pairing table to results/ (the records behind RESULTS.md).

    python benchmarks/recon.py --data digits --preset tiny --budget-s 120                         # CPU smoke, minutes
    python benchmarks/recon.py --data mnist-5k --preset mnist --budget-s 210 --batch-size 512 --compile --out $OUT/mnist

Each model trains with `--time-budget`: its curriculum N(k) follows the clock, so it
spans the whole budget on any device (the first, compiling step is not counted).
Runs are packed (bf16 EMA weights + config) under --out for transport.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path


from alignlearn.checkpoint import pack_run
from alignlearn.config import TrainConfig, make_run_config
from alignlearn.data import load_data
from alignlearn.objectives import ObjectiveConfig
from alignlearn.probes.recon import run_recon
from alignlearn.results import record_row
from alignlearn.trainer import read_metrics, steady_img_per_s, train
from noiser_recipes import parse_variant  # benchmarks/ is on sys.path when this script runs


def make_cfg(objective, data, a, recipe=None):
    tc = TrainConfig(steps=10**6, time_budget_s=a.budget_s, batch_size=a.batch_size, lr=a.lr, class_cond=a.class_cond,
                     seed=a.seed, device=a.device, compile=a.compile, log_every=a.log_every, ckpt_every=10**9, sample_every=10**9, warmup=100)
    return make_run_config(ObjectiveConfig(objective, **(recipe or {})), tc, data_name=a.data, shape=data[0].shape,
                           num_classes=data[0].num_classes, preset=a.preset, data_dir=a.data_dir, data_source=data[0].source)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--budget-s", type=float, default=120.0, help="training seconds per model")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--class-cond", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="training seed of the three models")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--noiser-recipe", default="default", help="noiser recipe knobs, e.g. 's1=20;target=stopgrad' (see noiser_recipes.py)")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--refine", type=int, default=20)
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--out", default="bench_recon")
    p.add_argument("--results", default="results", help="folder of the result records (results/*.jsonl)")
    a = p.parse_args(argv)
    from alignlearn.distributed import resolve_device

    a.device = str(resolve_device(a.device))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(a.data, a.data_dir)
    runs, budget = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for role, objective in (("noiser", "ct-inversion"), ("cm", "ct"), ("dm", "edm")):
            t0 = time.time()
            recipe = parse_variant(a.noiser_recipe) if role == "noiser" else None
            result = train(make_cfg(objective, data, a, recipe), Path(tmp) / role, show_progress=False, data=data)
            rate = steady_img_per_s(read_metrics(Path(tmp) / role), result.img_per_s)
            budget[role] = {"steps": result.step, "seconds": time.time() - t0, "img_per_s": rate}
            print(f"{role}: {result.step} steps in {budget[role]['seconds']:.0f} s ({rate:.0f} img/s)", flush=True)
            runs[role] = pack_run(Path(tmp) / role, out / "runs" / role)
        report = run_recon(runs["noiser"], runs["cm"], runs["dm"], refine=a.refine, refine_lr=1.0, num_images=a.num_images,
                           batch_size=256 if a.device.startswith("cuda") else 64, out_dir=out / "probe", device=a.device)
    (out / "budget.json").write_text(json.dumps(budget, indent=2) + "\n")
    cmd = "python benchmarks/recon.py " + " ".join(sys.argv[1:] if argv is None else argv)
    spent = f"{a.budget_s:.0f} s each (--time-budget): " + ", ".join(
        f"{r} {b['steps']} steps ({b['seconds']:.0f} s wall incl. setup and compile)" for r, b in budget.items())
    spent += f"; seed {a.seed}"
    if a.noiser_recipe != "default":
        spent += f"; noiser recipe {a.noiser_recipe}"
    header = ["date", "device", "data (held-out images)", "setting", "preset", "training per model", "pairing", "NFE", "PSNR",
              "SSIM", "LPIPS", "s / batch", "command"]
    setting = "class-conditional (true label at encode and decode)" if a.class_cond else "unconditional"
    for r in report["pairings"]:
        lp = f"{r['lpips']:.4f}" if r["lpips"] is not None else "unavailable"
        record_row(a.results, "reconstruction", header, [
            str(dt.date.today()), report["device"], f"{report['data']} ({report['num_images']})", setting, a.preset, spent,
            r["pairing"], f"{r['encode_nfe']} + {r['decode_nfe']}", f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", lp,
            f"{r['total_s_per_batch']:.4f} (batch {report['batch_size']})", f"`{cmd}`"])
    rows = {r["pairing"]: r for r in report["pairings"]}
    if "CT_Inv+CM" in rows and "DDIM_Inv+DM" in rows:
        speed = rows["DDIM_Inv+DM"]["encode_s_per_batch"] / rows["CT_Inv+CM"]["encode_s_per_batch"]
        trip = rows["DDIM_Inv+DM"]["total_s_per_batch"] / rows["CT_Inv+CM"]["total_s_per_batch"]
        record_row(a.results, "speed_ratio",
                   ["date", "device", "data", "preset", "encode speed-up (CT_Inv vs DDIM_Inv 30)", "round-trip speed-up (CT_Inv+CM vs DDIM_Inv+DM 30+30)", "command"],
                   [str(dt.date.today()), report["device"], a.data, a.preset, f"{speed:.1f}x", f"{trip:.1f}x", f"`{cmd}`"])
    print((out / "probe" / "report.md").read_text())


if __name__ == "__main__":
    main()
