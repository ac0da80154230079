"""Fidelity rows for RESULTS.md: a noiser's latents against the PF-ODE endpoint (`alignlearn probe fidelity`).

    python benchmarks/fidelity.py --data gmm-digits --budget-s 600          # train a noiser 600 s, exact reference
    python benchmarks/fidelity.py --noiser demo/runs/noiser --dm demo/runs/dm   # existing runs, DM reference

With --budget-s it trains a `ct-inversion` noiser (today's default recipe, or --recipe) on --data for that
many seconds of wall clock (`--time-budget`), then probes it. Every row of the probe's table becomes a record
in results/fidelity.jsonl.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from alignlearn.config import TrainConfig, make_run_config
from alignlearn.data import load_data
from alignlearn.distributed import resolve_device
from alignlearn.objectives import ObjectiveConfig
from alignlearn.probes.fidelity import run_fidelity
from alignlearn.results import record_row
from alignlearn.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noiser_recipes import parse_variant  # noqa: E402


def train_noiser(a, out: Path) -> str:
    data = load_data(a.data, a.data_dir)
    recipe = parse_variant(a.recipe)
    lr = recipe.pop("lr", a.lr)
    tc = TrainConfig(steps=10**6, time_budget_s=a.budget_s, batch_size=a.batch_size, lr=lr, class_cond=a.class_cond,
                     seed=a.seed, device=a.device, ckpt_every=10**9, sample_every=10**9)
    cfg = make_run_config(ObjectiveConfig("ct-inversion", **recipe), tc, data_name=a.data, shape=data[0].shape,
                          num_classes=data[0].num_classes, preset=a.preset, data_dir=a.data_dir)
    result = train(cfg, out, show_progress=False, data=data)
    return (f"{a.preset}, {a.budget_s:.0f} s ({result.step} steps, batch {a.batch_size}), recipe {a.recipe}"
            + (", class-conditional" if a.class_cond else "") + f", seed {a.seed}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--noiser", type=Path, help="an existing noiser run (else one is trained for --budget-s)")
    p.add_argument("--dm", type=Path, help="a diffusion-model run: the reference where no exact one exists")
    p.add_argument("--data", default=None, help="data set  [default: the noiser's own; gmm-digits when training]")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--budget-s", type=float, default=600.0)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--recipe", default="default", help="noiser recipe knobs, e.g. 's1=20' (see noiser_recipes.py)")
    p.add_argument("--class-cond", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=256)
    p.add_argument("--ref-steps", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--keep", type=Path, default=None, help="keep the trained noiser here")
    p.add_argument("--results", default="results", help="folder of the result records (results/*.jsonl)")
    a = p.parse_args(argv)
    a.device = str(resolve_device(a.device))
    cmd = "`python " + " ".join(["benchmarks/fidelity.py", *(argv if argv is not None else sys.argv[1:])]) + "`"
    with tempfile.TemporaryDirectory() as tmp:
        if a.noiser is None:
            a.data = a.data or "gmm-digits"
            noiser = a.keep or Path(tmp) / "noiser"
            training = train_noiser(a, noiser)
        else:
            noiser, training = a.noiser, f"the run {a.noiser}"
        report = run_fidelity(noiser, a.dm, data=a.data, data_dir=a.data_dir, num_images=a.num_images,
                              ref_steps=a.ref_steps, out_dir=Path(tmp) / "probe", device=a.device)
        print((Path(tmp) / "probe" / "report.md").read_text())
    header = ["device", "data", "noiser", "reference", "encoder", "NFE", "rel. L2 median", "rel. L2 p90",
              "cosine median", "principal rel. L2 median", "off-subspace error median", "std / reference std", "command"]
    reference = ("exact" if report["exact"] else f"DM, {a.ref_steps} Heun steps") + (
        f" (halving moves it {report['reference_error_max']:.1e})" if report["reference_error_max"] else " (closed form)")
    for r in report["rows"]:
        print(record_row(a.results, "fidelity", header, [
            report["device"], f"{report['data']} ({report['images']})", training, reference, r["encoder"], str(r["nfe"]),
            f"{r['rel_l2_median']:.4f}", f"{r['rel_l2_p90']:.4f}", f"{r['cosine_median']:.4f}",
            f"{r['principal_rel_l2_median']:.4f}", f"{r['off_subspace_median']:.4f}", f"{r['std_ratio']:.3f}", cmd]))


if __name__ == "__main__":
    main()
