"""`alignlearn probe ...`: registered on the core's CLI app."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlearn.cli import app
from alignlearn.distributed import resolve_device
from alignlearn.errors import UserError

probe_app = typer.Typer(no_args_is_help=True, help="Evaluate latents: linear probes, reconstruction, editing.")
app.add_typer(probe_app, name="probe")


@probe_app.command("recon")
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
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
):
    """Reconstruction: CT_Inv / DDIM_Inv encoders against CM / DM decoders (report Table 1)."""
    from .recon import run_recon

    if dm_solver not in ("euler", "heun"):
        raise UserError(f"unknown --dm-solver {dm_solver!r}; choose euler or heun")
    report = run_recon(
        noiser, cm, dm, data=data, data_dir=str(data_dir) if data_dir else None, ddim_steps=ddim_steps, dm_steps=dm_steps,
        dm_solver=dm_solver, refine=refine, refine_lr=refine_lr, num_images=num_images, batch_size=batch_size,
        out_dir=out, device=str(resolve_device(device)),
    )
    typer.echo((out / "report.md").read_text())
