"""The `alignlearn` command line (typer). User mistakes end as one `error:` line and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="alignlearn: images to diffusion noise latents in one network evaluation (CT Inversion).",
)

RECIPE = "Recipe (DESIGN.md §1)"


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Run folder: config.json, metrics.jsonl, checkpoints/, samples/."),
    objective: str = typer.Option("ct-inversion", help="ct-inversion (noiser) | cd-inversion (noiser distilled from --teacher) | ct (consistency denoiser) | edm (diffusion denoiser)."),
    teacher: Optional[Path] = typer.Option(None, help="cd-inversion: the diffusion-model (edm) run whose PF-ODE steps replace Algorithm 1's shared noise."),
    data: str = typer.Option("digits", help="digits | mnist | fashion-mnist | cifar10 | mnist-5k | folder:PATH"),
    data_dir: Optional[Path] = typer.Option(None, help="Where torchvision data sets live (raw files are read without a network)."),
    image_size: Optional[int] = typer.Option(None, help="Resize folder:PATH images to this size (default: the first image's)."),
    preset: str = typer.Option("tiny", help="Backbone size: tiny | small | mnist | cifar | mlp."),
    steps: Optional[int] = typer.Option(None, help="Training steps K  [default: 2000 (with --time-budget: a cap of 1000000), or the run's own on --resume]"),
    time_budget: float = typer.Option(0.0, help="Train for this many seconds, the curriculum N(k) following the clock (0: off; the first, compiling step is not counted)."),
    batch_size: int = typer.Option(128, help="Global batch size (split across torchrun processes)."),
    class_cond: bool = typer.Option(False, "--class-cond", help="Condition on labels; a null label is trained with --cond-drop."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace a run that already lives in --out."),
    stop_after: Optional[int] = typer.Option(None, help="Stop (with a checkpoint) once this many steps are done; --resume continues."),
    lr: float = typer.Option(2e-4, help="Peak learning rate."),
    optimizer: str = typer.Option("adam", help="adam | radam"),
    warmup: int = typer.Option(100, help="Linear learning-rate warm-up steps."),
    grad_clip: float = typer.Option(1.0, help="Clip the gradient norm (0: off)."),
    ema_decay: float = typer.Option(0.999, help="EMA of the weights kept for evaluation."),
    cond_drop: float = typer.Option(0.1, help="Probability of the null label when --class-cond."),
    dropout: Optional[float] = typer.Option(None, help="Backbone dropout  [default: the preset's]"),
    step_schedule: str = typer.Option("ict", help="N(k): ict (doubling) | cm (2023 sqrt).", rich_help_panel=RECIPE),
    s0: Optional[int] = typer.Option(None, help="Initial N-1  [default: ict 10, cm 2]", rich_help_panel=RECIPE),
    s1: Optional[int] = typer.Option(None, help="Final N-1  [default: ict 1280, cm 150]", rich_help_panel=RECIPE),
    scale_distribution: Optional[str] = typer.Option(None, help="P over pairs: lognormal | uniform  [default: ct lognormal, ct-inversion uniform]", rich_help_panel=RECIPE),
    p_mean: Optional[float] = typer.Option(None, help="Lognormal mean  [default: CT -1.1, EDM -1.2]", rich_help_panel=RECIPE),
    p_std: Optional[float] = typer.Option(None, help="Lognormal std  [default: CT 2.0, EDM 1.2]", rich_help_panel=RECIPE),
    distance: str = typer.Option("pseudo-huber", help="d: pseudo-huber | l2 | lpips.", rich_help_panel=RECIPE),
    huber_c: Optional[float] = typer.Option(None, help="Pseudo-Huber c  [default: 0.00054 sqrt(dim)]", rich_help_panel=RECIPE),
    weighting: Optional[str] = typer.Option(None, help="lambda: inverse-dt (1/(t_{n+1}-t_n)) | uniform  [default: ct inverse-dt, ct-inversion uniform]", rich_help_panel=RECIPE),
    target: Optional[str] = typer.Option(None, help="Target network: stopgrad | ema  [default: ct stopgrad, ct-inversion ema]", rich_help_panel=RECIPE),
    target_ema: Optional[float] = typer.Option(None, help="mu of the EMA target  [default: ct 0.999, ct-inversion 0.95]", rich_help_panel=RECIPE),
    curriculum_steps: Optional[int] = typer.Option(None, help="Steps over which N(k) grows to s1+1  [default: --steps]", rich_help_panel=RECIPE),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    bf16: bool = typer.Option(True, help="bf16 autocast (GPU only)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="With --compile on one GPU: run the compiled passes as "
                                     "CUDA graphs, with channels-last buffers throughout and per-channel GroupNorm "
                                     "statistics (1.64x the compiled step's img/s for the mnist preset on an H100, "
                                     "RESULTS.md)."),
    channels_last: bool = typer.Option(True, help="channels-last memory format for images (GPU only)."),
    group_norm: str = typer.Option("auto", help="GroupNorm statistics: auto (per-channel with --cuda-graphs, else "
                                   "native) | native | per-channel (the same function; per-channel reads "
                                   "channels-last memory contiguously)."),
    dropout_rng: str = typer.Option("replay", help="The target pass's shared dropout mask: replay (the online pass's "
                                    "RNG state replayed) | counter (a hash of a per-step seed and each unit's "
                                    "position: shared by construction, fused into compiled kernels; with --cuda-graphs "
                                    "at batch 1024, 27.8% of an H100's bf16 peak for the mnist preset, RESULTS.md)."),
    log_every: int = typer.Option(25, help="Steps between metrics lines (the only host syncs)."),
    ckpt_every: int = typer.Option(1000, help="Steps between checkpoints."),
    sample_every: int = typer.Option(1000, help="Steps between preview grids."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Train a noiser (ct-inversion) or a paired denoiser (ct, edm)."""
    from .checkpoint import CONFIG
    from .config import TrainConfig, make_run_config
    from .data import load_data
    from .models import load_run_config
    from .objectives import ObjectiveConfig
    from .trainer import train as run_training

    if resume:
        if not (out / CONFIG).is_file():
            raise UserError(f"cannot resume: {out} holds no alignlearn run (no {CONFIG})")
        cfg = load_run_config(out)
        if steps is not None:
            cfg.train.steps = steps
        data_pair = load_data(cfg.data.name, cfg.data.data_dir, cfg.data.image_size)
    else:
        obj = ObjectiveConfig(
            name=objective, step_schedule=step_schedule, s0=s0, s1=s1, scale_distribution=scale_distribution,
            p_mean=p_mean, p_std=p_std, distance=distance, huber_c=huber_c, weighting=weighting,
            target=target, target_ema=target_ema, curriculum_steps=curriculum_steps,
            teacher=str(teacher) if teacher else None,
        )
        tc = TrainConfig(
            steps=steps or (1_000_000 if time_budget else 2000), time_budget_s=time_budget, batch_size=batch_size, lr=lr, optimizer=optimizer, warmup=warmup, grad_clip=grad_clip,
            ema_decay=ema_decay, class_cond=class_cond, cond_drop=cond_drop, seed=seed, device=device, bf16=bf16,
            compile=compile, cuda_graphs=cuda_graphs, channels_last=channels_last, group_norm=group_norm, dropout_rng=dropout_rng, log_every=log_every, ckpt_every=ckpt_every, sample_every=sample_every,
        )
        data_dir_s = str(data_dir) if data_dir else None
        data_pair = load_data(data, data_dir_s, image_size)
        cfg = make_run_config(
            obj, tc, data_name=data, shape=data_pair[0].shape, num_classes=data_pair[0].num_classes,
            preset=preset, data_dir=data_dir_s, image_size=image_size, dropout=dropout,
        )
    result = run_training(cfg, out, resume=resume, force=force, stop_after=stop_after, show_progress=not quiet, data=data_pair)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        typer.echo(f"trained {result.step} steps, loss {result.loss:.4g}, {result.img_per_s:.0f} img/s; checkpoint {result.checkpoint}")


# Command groups of the packages built on the core register themselves on `app` when
# imported; the core names them only here, as plugins, and never imports their code.
PLUGINS = ("alignlearn.export.cli", "alignlearn.probes.cli")


def main() -> None:
    import importlib

    from .trainer import TrainingStopped

    for name in PLUGINS:
        importlib.import_module(name)
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except TrainingStopped as e:
        typer.echo(f"stopped: {e}", err=True)
        sys.exit(e.exit_code)
