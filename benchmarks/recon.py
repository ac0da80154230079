"""Train the noiser, the CT denoiser and the EDM denoiser on a time budget, run the reconstruction probe,
and append the four-pairing table to results/ (the records behind RESULTS.md).

    python benchmarks/recon.py --data digits --preset tiny --budget-s 120                         # CPU smoke, minutes
    python benchmarks/recon.py --data mnist-5k --preset mnist --budget-s 210 --batch-size 512 --compile --out $OUT/mnist

Each model trains with `--time-budget`: its curriculum N(k) follows the clock, so it
spans the whole budget on any device (the first, compiling step is not counted). The diffusion model
trains first and the noiser starts from it (`--noiser-recipe init_from=dm`, the recipe that won on
fidelity; `default` trains it from scratch). Runs are packed (bf16 EMA weights + config) under --out for
transport.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


from alignlearn.checkpoint import pack_run
from alignlearn.data import load_data
from alignlearn.probes.recon import run_recon
from alignlearn.results import record_row
from alignlearn.trainer import read_metrics, steady_img_per_s

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling script, also when loaded as a module
from training import train_model  # noqa: E402


def train_and_probe(a, data, seed: int, out: Path) -> tuple[dict, dict]:
    """The three models for one seed, packed under out/runs, and their reconstruction report."""
    runs, budget = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for role, recipe in (("dm", "objective=edm"), ("cm", "objective=ct"), ("noiser", a.noiser_recipe)):
            t0 = time.time()
            _, result = train_model(a, Path(tmp) / role, recipe, seed, a.budget_s, dm=Path(tmp) / "dm", data=data)
            rate = steady_img_per_s(read_metrics(Path(tmp) / role), result.img_per_s)
            budget[role] = {"steps": result.step, "seconds": time.time() - t0, "img_per_s": rate}
            print(f"seed {seed}, {role}: {result.step} steps in {budget[role]['seconds']:.0f} s ({rate:.0f} img/s)", flush=True)
            runs[role] = pack_run(Path(tmp) / role, out / "runs" / role)
        report = run_recon(runs["noiser"], runs["cm"], runs["dm"], refine=a.refine, refine_lr=1.0, num_images=a.num_images,
                           batch_size=256 if a.device.startswith("cuda") else 64, out_dir=out / "probe", device=a.device,
                           lpips_weights=a.lpips_weights)
    (out / "budget.json").write_text(json.dumps(budget, indent=2) + "\n")
    return report, budget


def spread(values: list[float | None], digits: int) -> str:
    """mean ± std over seeds (one value: itself); 'unavailable' when a metric was not computed."""
    if any(v is None for v in values):
        return "unavailable"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--budget-s", type=float, default=120.0, help="training seconds per model")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--class-cond", action="store_true")
    p.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1,2: one row per pairing with mean ± std")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--noiser-recipe", default="init_from=dm",
                   help="noiser recipe (benchmarks/training.py's keys), e.g. 'default' or 'init_from=dm;s1=20'")
    p.add_argument("--refine", type=int, default=20)
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--out", default="bench_recon")
    p.add_argument("--lpips-weights", default=None, help="LPIPS alex weights (safetensors)  [default: $ALIGNLEARN_LPIPS_WEIGHTS, else torchvision's]")
    p.add_argument("--results", default="results", help="folder of the result records (results/*.jsonl)")
    a = p.parse_args(argv)
    from alignlearn.distributed import resolve_device

    a.device = str(resolve_device(a.device))
    seeds = [int(s) for s in a.seeds.split(",")]
    data = load_data(a.data, a.data_dir)
    reports, budgets = [], []
    for seed in seeds:  # the last seed's runs stay in --out/runs
        report, budget = train_and_probe(a, data, seed, Path(a.out))
        reports.append(report)
        budgets.append(budget)
    cmd = "python benchmarks/recon.py " + " ".join(sys.argv[1:] if argv is None else argv)
    spent = f"{a.budget_s:.0f} s each (--time-budget): " + ", ".join(
        f"{r} {min(b[r]['steps'] for b in budgets)}-{max(b[r]['steps'] for b in budgets)} steps" for r in budgets[0])
    spent += f"; seeds {a.seeds}; noiser recipe {a.noiser_recipe}"
    header = ["date", "device", "data (held-out images)", "setting", "preset", "training per model", "pairing", "NFE", "PSNR",
              "SSIM", "LPIPS", "s / batch", "command"]
    setting = "class-conditional (true label at encode and decode)" if a.class_cond else "unconditional"
    first = reports[0]
    for i, r in enumerate(first["pairings"]):
        per_seed = [rep["pairings"][i] for rep in reports]
        record_row(a.results, "reconstruction", header, [
            str(dt.date.today()), first["device"], f"{first['data']} ({first['num_images']})", setting, a.preset, spent,
            r["pairing"], f"{r['encode_nfe']} + {r['decode_nfe']}", spread([q["psnr"] for q in per_seed], 2),
            spread([q["ssim"] for q in per_seed], 4), spread([q["lpips"] for q in per_seed], 4),
            f"{r['total_s_per_batch']:.4f} (batch {first['batch_size']})", f"`{cmd}`"])
    rows = {r["pairing"]: r for r in first["pairings"]}
    if "CT_Inv+CM" in rows and "DDIM_Inv+DM" in rows:
        speed = rows["DDIM_Inv+DM"]["encode_s_per_batch"] / rows["CT_Inv+CM"]["encode_s_per_batch"]
        trip = rows["DDIM_Inv+DM"]["total_s_per_batch"] / rows["CT_Inv+CM"]["total_s_per_batch"]
        record_row(a.results, "speed_ratio",
                   ["date", "device", "data", "preset", "encode speed-up (CT_Inv vs DDIM_Inv 30)", "round-trip speed-up (CT_Inv+CM vs DDIM_Inv+DM 30+30)", "command"],
                   [str(dt.date.today()), first["device"], a.data, a.preset, f"{speed:.1f}x", f"{trip:.1f}x", f"`{cmd}`"])
    print((Path(a.out) / "probe" / "report.md").read_text())


if __name__ == "__main__":
    main()
