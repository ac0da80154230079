"""Fidelity rows for RESULTS.md: a noiser's latents against the PF-ODE endpoint (`alignlearn probe fidelity`).

    python benchmarks/fidelity.py --data gmm-digits --budget-s 600          # train a noiser 600 s, exact reference
    python benchmarks/fidelity.py --noiser demo/runs/noiser --dm demo/runs/dm   # existing runs, DM reference
    python benchmarks/fidelity.py --budget-s 300 --dm-budget-s 300 --seeds 0,1 \
        --recipes "default,s1=20,segments=4,init_from=dm,objective=cd-inversion;teacher=exact;teacher_solver=heun"

Without --noiser it trains one noiser per recipe and seed on --data (gmm-digits by default), each for the
same seconds of wall clock (`--time-budget`), then probes each. Recipes are benchmarks/training.py's
(`default`, or `key=value` pairs joined by `;`). `dm` names a diffusion model trained here for --dm-budget-s
on the same data; it also adds DDIM inversion with that model to the table (the yardstick: a DM trained for
as long as the noiser). Every row of each probe's table becomes a record in results/fidelity.jsonl (the
DDIM rows once per command).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from alignlearn.config import TrainConfig
from alignlearn.distributed import resolve_device
from alignlearn.probes.fidelity import run_fidelity
from alignlearn.results import record_row

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training import train_model  # noqa: E402


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
    p.add_argument("--recipes", default="default", help="comma-separated noiser recipes, e.g. 'default,s1=20' (above)")
    p.add_argument("--dm-budget-s", type=float, default=0.0, help="also train a diffusion model this long (the word dm in recipes)")
    p.add_argument("--class-cond", action="store_true")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds of the noisers")
    p.add_argument("--num-images", type=int, default=256)
    p.add_argument("--ref-steps", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--keep", type=Path, default=None, help="keep the trained models in this folder")
    p.add_argument("--results", default="results", help="folder of the result records (results/*.jsonl)")
    p.add_argument("--subject", default="fidelity", help="the records' file: results/SUBJECT.jsonl (recipes: the recipe comparison)")
    a = p.parse_args(argv)
    a.device = str(resolve_device(a.device))
    cmd = "`python " + shlex.join(["benchmarks/fidelity.py", *(argv if argv is not None else sys.argv[1:])]) + "`"
    seeds = [int(x) for x in a.seeds.split(",")]
    recipes = a.recipes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = a.keep or Path(tmp)
        dm = a.dm
        if a.noiser is not None:
            jobs = [(a.noiser, f"the run {a.noiser}")]
        else:
            a.data = a.data or "gmm-digits"
            if a.dm_budget_s:
                dm = root / "dm"
                train_model(a, dm, "objective=edm", 0, a.dm_budget_s)
            jobs = []
            for recipe in recipes:
                for seed in seeds:
                    out = root / f"{recipe.replace(';', '_').replace('=', '-').replace('/', '_')}-seed{seed}"
                    jobs.append((out, train_model(a, out, recipe, seed, a.budget_s, dm)[0]))
        for i, (noiser, training) in enumerate(jobs):
            report = run_fidelity(noiser, dm, data=a.data, data_dir=a.data_dir, num_images=a.num_images,
                                  ref_steps=a.ref_steps, out_dir=Path(tmp) / f"probe{i}", device=a.device)
            print((Path(tmp) / f"probe{i}" / "report.md").read_text())
            dm_note = f" (DM {a.dm_budget_s:.0f} s)" if a.dm_budget_s else ""
            # the DDIM rows do not depend on the noiser: once per command
            for line in record_fidelity(a.results, a.subject, report, training, a.ref_steps, cmd, ddim_rows=not i, dm_note=dm_note):
                print(line)


HEADER = ["device", "data", "noiser", "reference", "encoder", "NFE", "rel. L2 median", "rel. L2 p90", "cosine median",
          "principal rel. L2 median", "off-subspace error median", "std / reference std", "command"]


def record_fidelity(results: str | Path, subject: str, report: dict, training: str, ref_steps: int, cmd: str, *,
                    ddim_rows: bool = True, dm_note: str = "") -> list[str]:
    """Append one fidelity probe's rows to results/SUBJECT.jsonl; `dm_note` labels DDIM through a trained DM."""
    reference = ("exact" if report["exact"] else f"DM, {ref_steps} Heun steps") + (
        f" (halving moves it {report['reference_error_max']:.1e})" if report["reference_error_max"] else " (closed form)")
    written = []
    for r in report["rows"]:
        if r["encoder"] != "CT_Inv" and not ddim_rows:
            continue
        note = dm_note if "DDIM" in r["encoder"] and "exact" not in r["encoder"] else ""
        written.append(record_row(results, subject, HEADER, [
            report["device"], f"{report['data']} ({report['images']})", training if r["encoder"] == "CT_Inv" else "-",
            reference, r["encoder"] + note, str(r["nfe"]), f"{r['rel_l2_median']:.4f}", f"{r['rel_l2_p90']:.4f}",
            f"{r['cosine_median']:.4f}", f"{r['principal_rel_l2_median']:.4f}", f"{r['off_subspace_median']:.4f}",
            f"{r['std_ratio']:.3f}", cmd]))
    return written


if __name__ == "__main__":
    main()
