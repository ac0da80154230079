"""Noiser recipe variants on images, each measured against the default in one run.

    python benchmarks/noiser_recipes.py --cm runs/cm --steps 1500 --variants default,target=stopgrad,target_ema=0.5

Trains one noiser per variant (same data, preset, steps, seed), then reports the
CT_Inv+CM reconstruction with a fixed consistency model, and appends records to results/.
With --dm (a diffusion model on the same data), also how close the latents are to
that model's own PF-ODE inversion (DDIM, 30 Euler steps): relative L2 and cosine,
which a decoded PSNR barely shows (RESULTS.md, latent sensitivity).
With --probes edit,edit-dm,linear, also what the latents are for: class-guided editing
decoded by the CM or the DM (conversion success, SSIM to the source across targets, and
the prior-latent floor) and the linear probe of the 1-NFE latent and of the noiser's
features, so the two latent measures can be checked against the uses they should predict.
A variant is `default` or comma-free `key=value` pairs joined by `;` (ObjectiveConfig
fields, `objective=cd-inversion;teacher=RUN`, or `lr=`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import tempfile
from pathlib import Path

from alignlearn.config import TrainConfig, make_run_config
from alignlearn.data import load_data
from alignlearn.models import load_run_config
from alignlearn.objectives import ObjectiveConfig
from alignlearn.probes.classifier import train_judge
from alignlearn.probes.edit import run_edit
from alignlearn.probes.linear import run_linear
from alignlearn.probes.recon import run_recon
from alignlearn.results import record_row
from alignlearn.trainer import train

PROBES = ("edit", "edit-dm", "linear")
FLOATS = {"p_mean", "p_std", "huber_c", "target_ema", "lr", "encode_mass"}
INTS = {"s0", "s1", "curriculum_steps", "teacher_steps", "segments"}


def parse_variant(text: str) -> dict:
    if text == "default":
        return {}
    out = {}
    for pair in text.split(";"):
        k, v = pair.split("=")
        out[k] = float(v) if k in FLOATS else int(v) if k in INTS else v
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cm", required=True, help="a consistency-model run on the same data (class-conditional or not)")
    p.add_argument("--dm", default=None, help="a diffusion-model run on the same data: compare the latents with its DDIM inversion")
    p.add_argument("--variants", default="default")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seed", type=int, default=0, help="the noisers' training seed (the same for every variant)")
    p.add_argument("--num-images", type=int, default=256)
    p.add_argument("--probes", default="", help="comma-separated: edit (CM decoder), edit-dm (--dm decoder), linear")
    p.add_argument("--judge-epochs", type=int, default=10, help="the edit probe's judging classifier")
    p.add_argument("--per-class", type=int, default=4, help="the edit probe's held-out sources per class")
    p.add_argument("--keep", default=None, help="keep the trained noisers in this folder (VARIANT-seedS), for later probes")
    p.add_argument("--results", default="results", help="folder of the result records (results/*.jsonl)")
    a = p.parse_args(argv)
    probes = [x for x in a.probes.split(",") if x]
    if set(probes) - set(PROBES):
        p.error(f"--probes takes {', '.join(PROBES)}, got {a.probes!r}")
    if "edit-dm" in probes and not a.dm:
        p.error("--probes edit-dm needs --dm")

    cm_cfg = load_run_config(a.cm)
    data = load_data(cm_cfg.data.name, cm_cfg.data.data_dir)
    class_cond = int(cm_cfg.model.backbone.get("num_classes", 0)) > 0
    edits = bool({"edit", "edit-dm"} & set(probes))
    if edits and not class_cond:
        p.error("--probes edit and edit-dm need class-conditional models")
    variants = a.variants.split(",")
    taken = [run_name(t, a.seed) for t in variants if a.keep and (Path(a.keep) / run_name(t, a.seed)).exists()]
    if taken:
        p.error(f"--keep {a.keep} already holds {', '.join(taken)}; choose another folder")
    # one judging classifier for every edit: it depends on the data alone
    judge = train_judge(*data, epochs=a.judge_epochs) if edits else None
    cmd = "python benchmarks/noiser_recipes.py " + " ".join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        for text in variants:
            variant = parse_variant(text)
            lr = variant.pop("lr", a.lr)
            objective = variant.pop("objective", "ct-inversion")
            cfg = make_run_config(ObjectiveConfig(objective, **variant),
                                  TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=lr, class_cond=class_cond, seed=a.seed,
                                              ckpt_every=10**9, sample_every=10**9, device="cpu"),
                                  data_name=cm_cfg.data.name, shape=data[0].shape, num_classes=data[0].num_classes, preset=a.preset)
            run = Path(a.keep or tmp) / run_name(text, a.seed)
            train(cfg, run, show_progress=False, data=data)
            rep = run_recon(run, a.cm, a.dm, num_images=a.num_images, out_dir=Path(tmp) / "probe", timing_repeats=1)
            row = rep["pairings"][0]
            cells = [str(dt.date.today()), rep["device"], cm_cfg.data.name, f"{a.preset}, {a.steps} steps, lr {lr:g}" + (f", seed {a.seed}" if a.seed else ""), text,
                     f"{row['psnr']:.2f}", f"{row['ssim']:.4f}"]
            header = ["date", "device", "data", "training", "variant", "PSNR", "SSIM"]
            section = "noiser_recipes"
            if a.dm:
                ode = rep["against_ddim"]["CT_Inv"]
                cells += [f"{ode['relative_l2']:.4f}", f"{ode['cosine']:.4f}"]
                header += ["relative L2 to DDIM_Inv", "cosine to DDIM_Inv"]
            if probes:
                extra_cells, extra_header = probe_cells(run, a, probes, Path(tmp) / "probe", judge)
                cells += extra_cells
                header += extra_header
                section = "noiser_recipes_uses"
            print(record_row(a.results, section, header + ["command"], cells + [f"`{cmd}`"]), flush=True)


def run_name(variant: str, seed: int) -> str:
    """A folder name for a variant's noiser: 'objective=cd-inversion;teacher=runs/dm' -> 'objective-cd-inversion_teacher-runs_dm-seed0'."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", variant.replace("=", "-")) + f"-seed{seed}"


def probe_cells(run: Path, a, probes: list[str], out: Path, judge) -> tuple[list[str], list[str]]:
    """The edit and linear probes' headline numbers for one noiser, as row cells and their headers."""
    cells, header = [], []
    for probe, decoder, name in (("edit", a.cm, "CM"), ("edit-dm", a.dm, "DM")):
        if probe in probes:
            rep = run_edit(run, decoder, per_class=a.per_class, out_dir=out / probe, seed=a.seed, judge=judge)
            w = rep["sweep"][0]
            cells += [f"{w['conversion_success']:.3f}", f"{w['ssim_across_targets']:.4f}", f"{rep['prior']['ssim_across_targets']:.4f}"]
            header += [f"edit conversion ({name})", f"edit SSIM to source ({name})", f"prior-latent SSIM ({name})"]
    if "linear" in probes:
        rep = run_linear(run, out_dir=out / "linear")
        for prefix in ("noiser latent", "noiser features"):
            r = next(r for r in rep["rows"] if r["features"].startswith(prefix))
            cells.append(f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}")
        header += ["linear probe: latent", "linear probe: features"]
    return cells, header


if __name__ == "__main__":
    main()
