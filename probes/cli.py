"""`alignlearn probe ...`: the probe command group, which the top-level app composes in."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlearn.distributed import resolve_device
from alignlearn.errors import UserError

app = typer.Typer(no_args_is_help=True, help="Evaluate latents: fidelity to the PF-ODE, reconstruction, linear probes, editing.")


@app.command("fidelity")
def probe_fidelity(
    noiser: Path = typer.Option(..., help="Noiser run (ct-inversion or cd-inversion)."),
    dm: Optional[Path] = typer.Option(None, help="Diffusion-model run (edm): the many-step reference where no exact one exists, and DDIM_Inv rows."),
    data: Optional[str] = typer.Option(None, help="Data set  [default: the noiser's own]"),
    data_dir: Optional[Path] = typer.Option(None, help="Where torchvision data sets live."),
    num_images: int = typer.Option(256, help="Held-out images, evenly spaced over the split."),
    ref_steps: int = typer.Option(256, help="Steps of the reference solver (Heun through --dm, or RK4 of the exact ODE)."),
    batch_size: int = typer.Option(64, help="Batch size (also the timed batch)."),
    out: Path = typer.Option(Path("fidelity"), help="Folder for report.json, report.md and fidelity_trajectory.png."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
):
    """Fidelity: the noiser's latents against the PF-ODE endpoint (exact where known, else a many-step DM inversion)."""
    from .fidelity import run_fidelity

    if num_images < 2 or batch_size < 1:
        raise UserError("--num-images must be at least 2 and --batch-size at least 1")
    run_fidelity(noiser, dm, data=data, data_dir=str(data_dir) if data_dir else None, num_images=num_images,
                 ref_steps=ref_steps, batch_size=batch_size, out_dir=out, device=str(resolve_device(device)))
    typer.echo((out / "report.md").read_text())


@app.command("recon")
def probe_recon(
    noiser: Optional[Path] = typer.Option(None, help="Noiser run (ct-inversion)."),
    cm: Optional[Path] = typer.Option(None, help="Consistency-model run (ct)."),
    dm: Optional[Path] = typer.Option(None, help="Diffusion-model run (edm)."),
    data: Optional[str] = typer.Option(None, help="Data set  [default: the models' own]"),
    data_dir: Optional[Path] = typer.Option(None, help="Where torchvision data sets live."),
    ddim_steps: int = typer.Option(30, help="Euler steps of DDIM inversion (NFE)."),
    dm_steps: int = typer.Option(30, help="ODE steps when decoding with the diffusion model."),
    dm_solver: str = typer.Option("euler", help="euler | heun"),
    refine: int = typer.Option(0, help="K gradient steps on the 1-NFE latent through the CM decoder (0: off)."),
    refine_lr: float = typer.Option(0.5, help="Adam step size on the latent (latent units, scale T)."),
    num_images: int = typer.Option(256, help="Held-out images to reconstruct."),
    batch_size: int = typer.Option(64, help="Batch size (also the timed batch)."),
    out: Path = typer.Option(Path("recon"), help="Folder for recon_grid.png, report.json, report.md."),
    lpips_weights: Optional[Path] = typer.Option(None, help="LPIPS alex weights (safetensors)  [default: $ALIGNLEARN_LPIPS_WEIGHTS, else torchvision's]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
):
    """Reconstruction: CT_Inv / DDIM_Inv encoders against CM / DM decoders (report Table 1)."""
    from .recon import run_recon

    if dm_solver not in ("euler", "heun"):
        raise UserError(f"unknown --dm-solver {dm_solver!r}; choose euler or heun")
    run_recon(
        noiser, cm, dm, data=data, data_dir=str(data_dir) if data_dir else None, ddim_steps=ddim_steps, dm_steps=dm_steps,
        dm_solver=dm_solver, refine=refine, refine_lr=refine_lr, num_images=num_images, batch_size=batch_size,
        out_dir=out, device=str(resolve_device(device)), lpips_weights=lpips_weights,
    )
    typer.echo((out / "report.md").read_text())


@app.command("linear")
def probe_linear(
    noiser: Path = typer.Option(..., help="Noiser run (ct-inversion)."),
    dm: Optional[Path] = typer.Option(None, help="Diffusion-model run: adds a DDIM-inversion-latent row."),
    data: Optional[str] = typer.Option(None, help="Data set  [default: the noiser's own]"),
    data_dir: Optional[Path] = typer.Option(None, help="Where torchvision data sets live."),
    block: str = typer.Option("mid.res.1", help="Backbone block whose pooled output is the feature row."),
    seeds: int = typer.Option(3, help="Stratified 80/20 splits (mean and std reported)."),
    max_images: int = typer.Option(5000, help="Images in the probe pool (stratified subsample)."),
    split: str = typer.Option("all", help="Probe pool: all (train and test) or test (images no model trained on)."),
    out: Path = typer.Option(Path("linear"), help="Folder for linear.json and linear.md."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
):
    """Linear probes of latents and features against pixels, random weights and DDIM latents."""
    from .linear import run_linear

    run_linear(noiser, dm, data=data, data_dir=str(data_dir) if data_dir else None, block=block, seeds=seeds,
               max_images=max_images, split=split, out_dir=out, device=str(resolve_device(device)))
    typer.echo((out / "linear.md").read_text())


@app.command("edit")
def probe_edit(
    noiser: Path = typer.Option(..., help="Class-conditional noiser run."),
    decoder: Path = typer.Option(..., help="Class-conditional consistency (ct) or diffusion (edm) run."),
    guidance: str = typer.Option("1", help="Guidance scales to sweep, e.g. 1,2,4 (1: the conditional model)."),
    targets: Optional[str] = typer.Option(None, help="Target classes, e.g. 0,3,7  [default: all]"),
    per_class: int = typer.Option(2, help="Source images per class (held-out split)."),
    dm_steps: int = typer.Option(30, help="ODE steps for a diffusion decoder."),
    judge_epochs: int = typer.Option(10, help="Training epochs of the judging classifier."),
    refine: int = typer.Option(0, help="K gradient steps on each latent through a CM decoder before editing (0: off)."),
    refine_lr: float = typer.Option(0.5, help="Adam step size of --refine (latent units, scale T)."),
    cm_mid: Optional[str] = typer.Option(None, help="Multistep CM decoding: noise levels after T, e.g. 2 or 5,0.8 (1 NFE each)."),
    data: Optional[str] = typer.Option(None, help="Data set  [default: the noiser's own]"),
    data_dir: Optional[Path] = typer.Option(None, help="Where torchvision data sets live."),
    out: Path = typer.Option(Path("edit"), help="Folder for edit_grid.png, edit.json, edit.md."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
):
    """Style-preserving class conversion: encode with the source label, decode with each target label."""
    from .edit import run_edit

    try:
        ws = [float(w) for w in guidance.split(",")]
        ts = [int(t) for t in targets.split(",")] if targets else None
        mid = [float(t) for t in cm_mid.split(",")] if cm_mid else []
    except ValueError:
        raise UserError("--guidance, --targets and --cm-mid take comma-separated numbers") from None
    run_edit(noiser, decoder, guidance=ws, targets=ts, data=data, data_dir=str(data_dir) if data_dir else None,
             per_class=per_class, dm_steps=dm_steps, judge_epochs=judge_epochs, out_dir=out, device=str(resolve_device(device)),
             refine=refine, refine_lr=refine_lr, cm_mid=mid)
    typer.echo((out / "edit.md").read_text())
