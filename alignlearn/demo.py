"""`alignlearn demo`: the whole toolkit on the embedded digits, in one command.

Trains a class-conditional EDM denoiser, a CT denoiser and a noiser warm-started from the
EDM denoiser (the recipe that won on fidelity over three seeds), plus a noiser of the default
recipe trained as long, so the report shows what the warm start gains in the same run; exports
the noiser to ONNX (with its parity check), runs the fidelity, reconstruction, linear and
editing probes, and writes report.md with the grids and a training-loss plot.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .config import TrainConfig, make_run_config
from .data import load_data
from .errors import UserError
from .objectives import ObjectiveConfig
from .trainer import read_metrics, train

DEMO_STEPS = 1200  # training steps of each of the four models: the whole demo fits about 13 minutes on 2 cores
# (role, objective, the run it starts from): the DM first, so the noiser can start as one Euler step of its ODE
ROLES = (("dm", "edm", None), ("cm", "ct", None), ("noiser", "ct-inversion", "dm"), ("noiser_default", "ct-inversion", None))
MARKER = ".alignlearn-demo"
OUTPUTS = ("runs", "training_loss.png", "noiser.onnx", "fidelity", "fidelity_default", "recon", "linear", "edit_cm", "edit_dm", "report.md")


def plot_losses(runs: dict[str, Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3))
    for ax, (name, run) in zip(axes, runs.items()):
        rows = read_metrics(run)
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
        ax.set_title(f"{name} ({json.loads((run / 'config.json').read_text())['objective']['name']})")
        ax.set_xlabel("step")
        ax.set_yscale("log")
    axes[0].set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(out: str | Path = "demo", *, steps: int = DEMO_STEPS, batch_size: int = 128, preset: str = "tiny",
             force: bool = False, quick: bool = False, seed: int = 0, lpips_weights=None, log=print) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UserError(f"{out} is not empty; pass --force to replace it or choose another --out")
        if not (out / MARKER).is_file():
            raise UserError(f"{out} is not a folder alignlearn demo wrote; --force replaces only a demo's folder, "
                            "so nothing was removed")
        for name in OUTPUTS:  # what a demo writes, and nothing else
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by alignlearn demo; demo --force replaces what it wrote here\n")
    t_start = time.time()
    data = load_data("digits")
    stages = 9
    summaries, runs = {}, {}
    for i, (role, objective, start) in enumerate(ROLES, 1):
        how = f", warm-started from the {start}" if start else (", default recipe, the baseline" if role == "noiser_default" else "")
        log(f"[{i}/{stages}] training the {role} ({objective}, {steps} steps, preset {preset}{how})")
        cfg = make_run_config(
            ObjectiveConfig(objective),
            TrainConfig(steps=steps, batch_size=batch_size, lr=5e-4 if not quick else 1e-3, class_cond=True,
                        log_every=25, ckpt_every=max(steps, 1), sample_every=max(steps, 1), device="cpu", seed=seed,
                        init_from=str(runs[start]) if start else None),
            data_name="digits", shape=data[0].shape, num_classes=data[0].num_classes, preset=preset,
        )
        t0 = time.time()
        result = train(cfg, out / "runs" / role, show_progress=not quick, data=data)
        summaries[role] = {"objective": objective + (f", --init-from {start}" if start else ""), "steps": result.step, "final_loss": result.loss,
                           "img_per_s": result.img_per_s, "seconds": time.time() - t0}
        runs[role] = out / "runs" / role
    plot_losses(runs, out / "training_loss.png")

    log(f"[5/{stages}] exporting the noiser to ONNX and checking it against PyTorch")
    from .export.build import export_run
    from .export.onnx_export import parity_table

    exported = export_run(runs["noiser"], out / "noiser.onnx", log=lambda s: None)

    log(f"[6/{stages}] fidelity probe (latents against the diffusion model's many-step PF-ODE inversion)")
    from .probes.fidelity import run_fidelity

    fidelity = {role: run_fidelity(runs[role], runs["dm"], num_images=32 if quick else 128, ref_steps=200 if quick else 256,
                                   out_dir=out / ("fidelity" if role == "noiser" else "fidelity_default"))
                for role in ("noiser", "noiser_default")}

    log(f"[7/{stages}] reconstruction probe (CT_Inv / DDIM_Inv x CM / DM)")
    from .probes.recon import run_recon

    run_recon(runs["noiser"], runs["cm"], runs["dm"], ddim_steps=30, dm_steps=30, refine=20, refine_lr=1.0,
              num_images=64 if quick else 256, out_dir=out / "recon", timing_repeats=2 if quick else 5,
              lpips_weights=lpips_weights)

    log(f"[8/{stages}] linear probes")
    from .probes.linear import run_linear

    run_linear(runs["noiser"], runs["dm"], seeds=2 if quick else 3, max_images=600 if quick else 5000,
               ddim_steps=10 if quick else 30, out_dir=out / "linear")

    log(f"[9/{stages}] class-guided editing")
    from .probes.edit import run_edit

    run_edit(runs["noiser"], runs["cm"], guidance=[1.0], per_class=1 if quick else 2, judge_epochs=2 if quick else 15,
             out_dir=out / "edit_cm", seed=seed)
    run_edit(runs["noiser"], runs["dm"], guidance=[1.0, 2.0], per_class=1 if quick else 2, judge_epochs=2 if quick else 15,
             dm_steps=10 if quick else 30, out_dir=out / "edit_dm", grid_guidance=2.0, seed=seed)

    elapsed = time.time() - t_start
    report = _report(summaries, exported, parity_table, out, elapsed, seed, fidelity)
    (out / "report.md").write_text(report)
    log(f"done in {elapsed / 60:.1f} min: {out / 'report.md'}")
    return out / "report.md"


def warm_start_gain(fidelity: dict) -> list[str]:
    """The adopted recipe against the default, from the same run's fidelity probes."""
    ct = {role: next(r for r in rep["rows"] if r["encoder"] == "CT_Inv") for role, rep in fidelity.items()}
    ddim = next((r for r in fidelity["noiser"]["rows"] if r["encoder"].startswith("DDIM_Inv 30,")), None)
    lines = ["The noiser starts as one Euler step of the diffusion model's PF-ODE (`--init-from`). The same steps of the "
             "default recipe, trained in this run from scratch, against the same reference:", "",
             "| noiser | rel. L2 median | cosine median |", "|---|---|---|"]
    for role, name in (("noiser_default", "default recipe"), ("noiser", "warm-started from the DM (this demo's noiser)")):
        lines.append(f"| {name} | {ct[role]['rel_l2_median']:.4f} | {ct[role]['cosine_median']:.4f} |")
    if ddim:
        lines.append(f"| (30-step DDIM inversion, for scale) | {ddim['rel_l2_median']:.4f} | {ddim['cosine_median']:.4f} |")
    return lines + [""]


def _report(summaries, exported, parity_table, out: Path, elapsed: float, seed: int, fidelity: dict) -> str:
    lines = ["# alignlearn demo: digits", "",
             f"Everything below was produced by `alignlearn demo` in {elapsed / 60:.1f} minutes on this machine's CPU: "
             f"scikit-learn's 1,797 real 8x8 digits resized to 16x16, 20% held out; seed {seed}.", "",
             "## Training", "", "| model | objective | steps | final loss | img/s | seconds |", "|---|---|---|---|---|---|"]
    for role, s in summaries.items():
        lines.append(f"| {role} | {s['objective']} | {s['steps']} | {s['final_loss']:.4g} | {s['img_per_s']:.0f} | {s['seconds']:.0f} |")
    lines += ["", "![training loss](training_loss.png)", "",
              "## Export", "", f"`{exported.onnx.name}`: ONNX Runtime (CPU) against PyTorch, relative L2 error:", "",
              "```", parity_table(exported.onnx_parity), "```", ""]
    for title, md, img in (("Fidelity to the PF-ODE endpoint", out / "fidelity/report.md", "fidelity/fidelity_trajectory.png"),
                           ("Reconstruction", out / "recon/report.md", "recon/recon_grid.png"),
                           ("Linear probes", out / "linear/linear.md", None),
                           ("Editing with the consistency model", out / "edit_cm/edit.md", "edit_cm/edit_grid.png"),
                           ("Editing with the diffusion model", out / "edit_dm/edit.md", "edit_dm/edit_grid.png")):
        body = md.read_text().split("\n", 1)[1].strip()  # drop the sub-report's own title
        lines += [f"## {title}", "", body, ""]
        if md.parent.name == "fidelity":
            lines += warm_start_gain(fidelity)
        if img:
            lines += [f"![{title}]({img})", ""]
    return "\n".join(lines) + "\n"
