"""Build a preconditioned model from its config, and load trained ones from run folders."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import CONFIG, latest_checkpoint, load_weights, read_json
from .config import ModelConfig, RunConfig
from .errors import UserError
from .networks import build_backbone
from .precond import PARAMETERISATIONS, Preconditioned


def build_model(cfg: ModelConfig) -> Preconditioned:
    if cfg.parameterisation not in PARAMETERISATIONS:
        raise UserError(f"unknown parameterisation {cfg.parameterisation!r}; choose from {', '.join(PARAMETERISATIONS)}")
    cls = PARAMETERISATIONS[cfg.parameterisation]
    return cls(build_backbone(cfg.backbone), sigma_data=cfg.sigma_data, eps=cfg.eps, T=cfg.T)


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
    """The trained model of a run (EMA weights by default), in eval mode."""
    cfg = load_run_config(run_dir)
    model = build_model(cfg.model)
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    load_weights(model, latest_checkpoint(Path(run_dir)) / f"{weights}.safetensors")  # packed bf16 weights upcast here
    return model.to(device).eval(), cfg


def load_teacher(path: str | Path, student: RunConfig, device) -> Preconditioned:
    """The frozen diffusion denoiser that cd-inversion distils from, checked against the student's data."""
    teacher, cfg = load_model(path, device=device)
    if teacher.kind != "edm":
        raise UserError(f"--teacher {path} holds a {teacher.kind} model; cd-inversion needs a diffusion (edm) run")
    if tuple(cfg.data.shape) != tuple(student.data.shape):
        raise UserError(f"--teacher was trained on images of shape {tuple(cfg.data.shape)}, the data here are {tuple(student.data.shape)}")
    t_classes, s_classes = cfg.model.backbone.get("num_classes", 0), student.model.backbone.get("num_classes", 0)
    if t_classes and s_classes and t_classes != s_classes:
        raise UserError(f"--teacher is conditioned on {t_classes} classes, the noiser on {s_classes}")
    return teacher.requires_grad_(False)
