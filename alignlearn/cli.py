"""The `alignlearn` command: `train` and `demo` here, the export commands and the `probe` group composed in.

This module and demo.py are the application layer: the only modules of the core package that import
`alignlearn.export` and `alignlearn.probes`, which in turn never import this one. User mistakes end as
one `error:` line and exit code 2. Every training default is read from the config dataclasses.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .config import STEPS_CAP_WITH_BUDGET, DataConfig, ModelConfig, TrainConfig
from .demo import DEMO_STEPS
from .errors import UserError
from .export import cli as export_cli
from .objectives import ObjectiveConfig, recipe_default_text
from .probes import cli as probes_cli
from .schedule import SCHEDULE_DEFAULTS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="alignlearn: images to diffusion noise latents in one network evaluation (CT Inversion).",
)

RECIPE = "Recipe (Algorithm 1's knobs)"
GPU = "GPU"
TC = TrainConfig  # field defaults, read once here for --help and the options


def _schedule_default(i: int) -> str:
    return ", ".join(f"{name} {pair[i]}" for name, pair in SCHEDULE_DEFAULTS.items())


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Run folder: config.json, metrics.jsonl, checkpoints/, samples/."),
    objective: str = typer.Option(ObjectiveConfig.name, help="ct-inversion (noiser) | cd-inversion (noiser distilled from --teacher) | ct (consistency denoiser) | edm (diffusion denoiser)."),
    teacher: Optional[Path] = typer.Option(None, help="cd-inversion: the diffusion-model (edm) run whose PF-ODE steps replace Algorithm 1's shared noise, or 'exact' (gmm-digits: the analytic denoiser)."),
    teacher_solver: str = typer.Option(ObjectiveConfig.teacher_solver, help="cd-inversion: the teacher's step, euler | heun (second order, 2 NFE).", rich_help_panel=RECIPE),
    teacher_steps: int = typer.Option(ObjectiveConfig.teacher_steps, help="cd-inversion: teacher steps per training pair (t_n, t_{n+k}).", rich_help_panel=RECIPE),
    encode_mass: float = typer.Option(ObjectiveConfig.encode_mass, help="Noisers: extra probability on the pairs that start at the encoding levels (eps and each segment boundary).", rich_help_panel=RECIPE),
    segments: int = typer.Option(ModelConfig.segments, help="Noiser segments K: encoding takes K evaluations, boundary to boundary (1: the one-step noiser)."),
    init_from: Optional[Path] = typer.Option(None, help="Noiser warm start: a diffusion-model (edm) run of the same data and classes; the noiser begins as one Euler step of its PF-ODE."),
    data: str = typer.Option(DataConfig.name, help="digits | mnist | fashion-mnist | cifar10 | mnist-5k | folder:PATH"),
    data_dir: Optional[Path] = typer.Option(None, help="Where torchvision data sets live (raw files are read without a network)."),
    image_size: Optional[int] = typer.Option(None, help="Resize folder:PATH images to this size (default: the first image's)."),
    preset: str = typer.Option("tiny", help="Backbone size: tiny | small | mnist | cifar | mlp."),
    steps: Optional[int] = typer.Option(None, help=f"Training steps K  [default: {TC.steps} (with --time-budget: a cap of {STEPS_CAP_WITH_BUDGET}), or the run's own on --resume]"),
    time_budget: float = typer.Option(TC.time_budget_s, help="Train for this many seconds, the curriculum N(k) following the clock (0: off; the first, compiling step is not counted)."),
    batch_size: int = typer.Option(TC.batch_size, help="Global batch size (split across torchrun processes)."),
    class_cond: bool = typer.Option(TC.class_cond, "--class-cond", help="Condition on labels; a null label is trained with --cond-drop."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace a run that already lives in --out."),
    stop_after: Optional[int] = typer.Option(None, help="Stop (with a checkpoint) once this many steps are done; --resume continues."),
    lr: float = typer.Option(TC.lr, help="Peak learning rate."),
    optimizer: str = typer.Option(TC.optimizer, help="adam | radam"),
    warmup: int = typer.Option(TC.warmup, help="Linear learning-rate warm-up steps."),
    grad_clip: float = typer.Option(TC.grad_clip, help="Clip the gradient norm (0: off)."),
    ema_decay: float = typer.Option(TC.ema_decay, help="EMA of the weights kept for evaluation."),
    cond_drop: float = typer.Option(TC.cond_drop, help="Probability of the null label when --class-cond."),
    dropout: Optional[float] = typer.Option(None, help="Backbone dropout  [default: the preset's]"),
    step_schedule: str = typer.Option(ObjectiveConfig.step_schedule, help="N(k): ict (doubling) | cm (2023 sqrt).", rich_help_panel=RECIPE),
    s0: Optional[int] = typer.Option(None, help=f"Initial N-1  [default: {_schedule_default(0)}]", rich_help_panel=RECIPE),
    s1: Optional[int] = typer.Option(None, help=f"Final N-1  [default: {_schedule_default(1)}]", rich_help_panel=RECIPE),
    scale_distribution: Optional[str] = typer.Option(None, help=f"P over pairs: lognormal | uniform  [default: {recipe_default_text('scale_distribution')}]", rich_help_panel=RECIPE),
    p_mean: Optional[float] = typer.Option(None, help=f"Lognormal mean  [default: {recipe_default_text('p_mean')}]", rich_help_panel=RECIPE),
    p_std: Optional[float] = typer.Option(None, help=f"Lognormal std  [default: {recipe_default_text('p_std')}]", rich_help_panel=RECIPE),
    distance: str = typer.Option(ObjectiveConfig.distance, help="d: pseudo-huber | l2 | lpips.", rich_help_panel=RECIPE),
    huber_c: Optional[float] = typer.Option(None, help="Pseudo-Huber c  [default: iCT's 0.00054 sqrt(dim)]", rich_help_panel=RECIPE),
    weighting: Optional[str] = typer.Option(None, help=f"lambda: inverse-dt (1/(t_{{n+1}}-t_n)) | uniform  [default: {recipe_default_text('weighting')}]", rich_help_panel=RECIPE),
    target: Optional[str] = typer.Option(None, help=f"Target network: stopgrad | ema  [default: {recipe_default_text('target')}]", rich_help_panel=RECIPE),
    target_ema: Optional[float] = typer.Option(None, help=f"mu of the EMA target  [default: {recipe_default_text('target_ema')}]", rich_help_panel=RECIPE),
    curriculum_steps: Optional[int] = typer.Option(None, help="Steps over which N(k) grows to s1+1  [default: --steps]", rich_help_panel=RECIPE),
    seed: int = typer.Option(TC.seed, help="Random seed."),
    device: str = typer.Option(TC.device, help="auto | cpu | cuda"),
    bf16: bool = typer.Option(TC.bf16, help="bf16 autocast (GPU only).", rich_help_panel=GPU),
    compile: bool = typer.Option(TC.compile, "--compile", help="torch.compile the model.", rich_help_panel=GPU),
    cuda_graphs: bool = typer.Option(TC.cuda_graphs, "--cuda-graphs", help="With --compile on one GPU: run the compiled passes as CUDA graphs (much faster; docs/performance.md).", rich_help_panel=GPU),
    channels_last: bool = typer.Option(TC.channels_last, help="channels-last memory format for images (GPU only).", rich_help_panel=GPU),
    group_norm: str = typer.Option(TC.group_norm, help="GroupNorm statistics: auto (per-channel with --cuda-graphs, else native) | native | per-channel (the same function).", rich_help_panel=GPU),
    dropout_rng: str = typer.Option(TC.dropout_rng, help="The target pass's shared dropout mask: replay (the online pass's RNG state) | counter (a hash of a per-step seed and each unit's position, fused into compiled kernels).", rich_help_panel=GPU),
    log_every: int = typer.Option(TC.log_every, help="Steps between metrics lines (the only host syncs)."),
    log: str = typer.Option(TC.log, help="Also log metrics and previews to: none | tensorboard (RUN/tensorboard; pip install 'alignlearn[tensorboard]')."),
    ckpt_every: int = typer.Option(TC.ckpt_every, help="Steps between checkpoints."),
    sample_every: int = typer.Option(TC.sample_every, help="Steps between preview grids."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Train a noiser (ct-inversion, cd-inversion) or a paired denoiser (ct, edm)."""
    from .checkpoint import CONFIG
    from .config import make_run_config
    from .data import load_data
    from .models import load_run_config
    from .trainer import train as run_training

    if image_size is not None and image_size < 1:
        raise UserError(f"--image-size must be at least 1, got {image_size}")
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    if stop_after is not None and stop_after < 1:
        raise UserError(f"--stop-after must be at least 1, got {stop_after}")
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
            teacher=str(teacher) if teacher else None, teacher_solver=teacher_solver, teacher_steps=teacher_steps,
            encode_mass=encode_mass,
        )
        tc = TrainConfig(
            steps=steps if steps is not None else (STEPS_CAP_WITH_BUDGET if time_budget else TC.steps), time_budget_s=time_budget,
            batch_size=batch_size, lr=lr, optimizer=optimizer, warmup=warmup, grad_clip=grad_clip,
            ema_decay=ema_decay, class_cond=class_cond, cond_drop=cond_drop, seed=seed, device=device, bf16=bf16,
            compile=compile, cuda_graphs=cuda_graphs, channels_last=channels_last, group_norm=group_norm,
            dropout_rng=dropout_rng, log_every=log_every, ckpt_every=ckpt_every, sample_every=sample_every, log=log,
            init_from=str(init_from) if init_from else None,
        )
        data_dir_s = str(data_dir) if data_dir else None
        data_pair = load_data(data, data_dir_s, image_size)
        cfg = make_run_config(
            obj, tc, data_name=data, shape=data_pair[0].shape, num_classes=data_pair[0].num_classes,
            preset=preset, data_dir=data_dir_s, image_size=image_size, dropout=dropout, data_source=data_pair[0].source,
            segments=segments,
        )
    result = run_training(cfg, out, resume=resume, force=force, stop_after=stop_after, show_progress=not quiet, data=data_pair)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"trained {result.step} steps, loss {result.loss:.4g}, {result.img_per_s:.0f} img/s; checkpoint {result.checkpoint}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo"), help="Report folder: report.md, grids, training_loss.png, runs/."),
    steps: int = typer.Option(DEMO_STEPS, help="Training steps of each of the four models."),
    batch_size: int = typer.Option(TC.batch_size, help="Training batch size."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out."),
    seed: int = typer.Option(TC.seed, help="Seed of the four trainings and of the editing probes' re-noising draws."),
    lpips_weights: Optional[Path] = typer.Option(None, help="LPIPS alex weights (safetensors)  [default: $ALIGNLEARN_LPIPS_WEIGHTS, else torchvision's]"),
):
    """Train, export and probe on the embedded digits: the whole toolkit in one command (CPU, ~13 minutes)."""
    from .demo import run_demo

    if steps < 1:
        raise UserError("--steps must be at least 1")
    run_demo(out, steps=steps, batch_size=batch_size, force=force, seed=seed, lpips_weights=lpips_weights, log=typer.echo)


for command in (export_cli.export, export_cli.encode, export_cli.bench):
    app.command()(command)
app.add_typer(probes_cli.app, name="probe")


def main() -> None:
    from .trainer import TrainingStopped

    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except TrainingStopped as e:
        typer.echo(f"stopped: {e}", err=True)
        sys.exit(e.exit_code)
