"""Load trained runs for a probe and check that they belong together and to the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from alignlearn.config import RunConfig
from alignlearn.data import ImageData, load_data
from alignlearn.errors import UserError
from alignlearn.models import load_model
from alignlearn.precond import Preconditioned


@dataclass
class Loaded:
    role: str
    path: Path
    model: Preconditioned
    cfg: RunConfig

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.cfg.data.shape)

    @property
    def num_classes(self) -> int:
        """Classes the model is conditioned on (0: unconditional); the null label is this index."""
        return int(self.cfg.model.backbone.get("num_classes", 0))

    def labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        return labels if self.num_classes and labels is not None else None


def load_role(path: str | Path | None, role: str, kind: str | tuple[str, ...], device, expected: str | None = None) -> Loaded | None:
    """A run of an expected parameterisation (`noiser`, `cm`, `edm`), or None when not given."""
    if path is None:
        return None
    kinds = (kind,) if isinstance(kind, str) else kind
    model, cfg = load_model(path, device=device)
    if model.kind not in kinds:
        raise UserError(f"--{role} {path} holds a {model.kind} model; expected {expected or ' or '.join(kinds)}")
    return Loaded(role, Path(path), model, cfg)


def load_noiser_and_dm(noiser, dm, device) -> tuple[Loaded, Loaded | None]:
    """A required noiser run and an optional diffusion-model run, checked against each other."""
    n = load_role(noiser, "noiser", "noiser", device)
    if n is None:
        raise UserError("--noiser is required")
    d = load_role(dm, "dm", "edm", device)
    check_compatible([m for m in (n, d) if m is not None])
    return n, d


def check_compatible(models: list[Loaded]) -> None:
    """Same image shape everywhere; conditional models agree on their class count."""
    if not models:
        return
    ref = models[0]
    for m in models[1:]:
        if m.shape != ref.shape:
            raise UserError(f"--{m.role} was trained on images of shape {m.shape} but --{ref.role} on {ref.shape}")
    conditional = [m for m in models if m.num_classes]
    for m in conditional[1:]:
        if m.num_classes != conditional[0].num_classes:
            raise UserError(
                f"--{m.role} is conditioned on {m.num_classes} classes but --{conditional[0].role} on {conditional[0].num_classes}"
            )


def evaluation_split(ref: Loaded, data: str | None, data_dir: str | None, split: str = "test") -> tuple[ImageData, ImageData]:
    """(train, test) of the reference model's data set (or `data`), checked against its image shape."""
    name = data or ref.cfg.data.name
    if not name:
        raise UserError(f"--{ref.role} {ref.path} does not name its data set (a diffusers model): pass --data")
    train, test = load_data(name, data_dir or ref.cfg.data.data_dir, ref.cfg.data.image_size)
    if train.shape != ref.shape:
        raise UserError(f"data set {name} has images of shape {train.shape}; the models expect {ref.shape}")
    if len(test) == 0:
        raise UserError(f"data set {name} has an empty {split} split")
    return train, test
