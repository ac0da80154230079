"""Build a preconditioned model from its config, and load trained ones from run folders."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import CONFIG, latest_checkpoint, load_weights, read_json
from .config import ModelConfig, RunConfig
from .diffusers_model import is_diffusers_model, load_diffusers
from .errors import UserError
from .networks import build_backbone
from .precond import PARAMETERISATIONS, Preconditioned


def build_model(cfg: ModelConfig) -> Preconditioned:
    if cfg.parameterisation not in PARAMETERISATIONS:
        raise UserError(f"unknown parameterisation {cfg.parameterisation!r}; choose from {', '.join(PARAMETERISATIONS)}")
    cls = PARAMETERISATIONS[cfg.parameterisation]
    extra = {"segments": cfg.segments} if cfg.parameterisation == "noiser" else {}
    return cls(build_backbone(cfg.backbone), sigma_data=cfg.sigma_data, eps=cfg.eps, T=cfg.T, **extra)


def load_run_config(run_dir: str | Path) -> RunConfig:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"{run_dir} does not exist")
    path = run_dir / CONFIG
    if not path.is_file() and (run_dir / "state.json").is_file():  # a checkpoint folder: config two levels up
        path = run_dir.parent.parent / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not an alignlearn run folder (no {CONFIG})")
    return RunConfig.from_dict(read_json(path))


def load_model(run_dir: str | Path, weights: str = "ema", device: str | torch.device = "cpu") -> tuple[Preconditioned, RunConfig]:
    """The trained model of a run (EMA weights by default), in eval mode; a diffusers folder through its adapter."""
    if is_diffusers_model(run_dir):
        return load_diffusers(run_dir, device)
    cfg = load_run_config(run_dir)
    model = build_model(cfg.model)
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    load_weights(model, latest_checkpoint(Path(run_dir)) / f"{weights}.safetensors")  # packed bf16 weights upcast here
    return model.to(device).eval(), cfg


EXACT_TEACHER = "exact"  # --teacher exact: the data set's analytic denoiser (gmm-digits), the ceiling of distillation


def load_teacher(path: str | Path, student: RunConfig, device):
    """The frozen diffusion denoiser that cd-inversion distils from, checked against the student's data."""
    if str(path) == EXACT_TEACHER:
        return _exact_teacher(student)
    teacher, cfg = _load_diffusion_run(path, "--teacher", student, device)
    t_classes, s_classes = cfg.model.backbone.get("num_classes", 0), student.model.backbone.get("num_classes", 0)
    if t_classes and s_classes and t_classes != s_classes:
        raise UserError(f"--teacher is conditioned on {t_classes} classes, the noiser on {s_classes}")
    return teacher.requires_grad_(False)


def _load_diffusion_run(path, flag: str, student: RunConfig, device):
    if is_diffusers_model(path):
        model, cfg = load_diffusers(path, device or "cpu")
        if tuple(cfg.data.shape) != tuple(student.data.shape):
            raise UserError(f"{flag} {path} takes images of shape {tuple(cfg.data.shape)}, the data here are {tuple(student.data.shape)}")
        return model, cfg
    cfg = load_run_config(path)
    if cfg.model.parameterisation != "edm":
        raise UserError(f"{flag} {path} holds a {cfg.model.parameterisation} model; it must be a diffusion (edm) run")
    if tuple(cfg.data.shape) != tuple(student.data.shape):
        raise UserError(f"{flag} was trained on images of shape {tuple(cfg.data.shape)}, the data here are {tuple(student.data.shape)}")
    return (load_model(path, device=device)[0] if device is not None else None), cfg


def _exact_teacher(student: RunConfig):
    from .gmm import exact_mixture

    gmm = exact_mixture(student.data.name)
    if gmm is None:
        raise UserError(f"--teacher exact needs data with a known denoiser (gmm-digits); {student.data.name} has none")

    def denoiser(x, t, labels=None):  # the mixture lives on the CPU in float64
        y = None if labels is None else labels.cpu()
        return gmm.denoiser(x.detach().cpu(), t.detach().cpu(), y).to(device=x.device, dtype=x.dtype)

    return denoiser


def warm_start_config(path: str | Path, student: RunConfig) -> dict:
    """The noiser backbone config for --init-from RUN: one Euler step of that diffusion model's PF-ODE
    (networks/warm_start.py), checked against the noiser's data, classes and noise levels."""
    from .networks.warm_start import euler_step_config

    if is_diffusers_model(path):
        raise UserError(f"--init-from needs an alignlearn diffusion (edm) run; {path} is a diffusers model (use it as --teacher)")
    _, cfg = _load_diffusion_run(path, "--init-from", student, None)
    dm_classes = cfg.model.backbone.get("num_classes", 0)
    own_classes = student.data.num_classes if student.train.class_cond else 0
    if dm_classes != own_classes:
        raise UserError(f"--init-from is conditioned on {dm_classes or 'no'} classes, the noiser on {own_classes or 'none'}")
    for key in ("sigma_data", "eps", "T"):
        if getattr(cfg.model, key) != getattr(student.model, key):
            raise UserError(f"--init-from has {key} {getattr(cfg.model, key)}, the noiser {getattr(student.model, key)}")
    return euler_step_config(cfg.model.backbone, cfg.model.sigma_data)


def init_from_diffusion(noiser: Preconditioned, path: str | Path) -> None:
    """Copy the diffusion run's EMA weights into a warm-started noiser's inner network."""
    dm, _ = load_model(path)
    noiser.backbone.inner.load_state_dict(dm.backbone.state_dict())
