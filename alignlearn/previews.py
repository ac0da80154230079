"""PNG grids that show what a model does during training: encodings or samples."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from .precond import Preconditioned
from .samplers import cm_sample, encode, ode_sample
from .schedule import karras_sigmas


def to_display(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x.float() + 1) / 2).clamp(0, 1)


@torch.no_grad()
def preview(model: Preconditioned, images: torch.Tensor, labels: torch.Tensor | None, path: Path, n: int = 16) -> None:
    """Noiser: inputs on top, latents / T below (as noise, mapped to [-1, 1] by 3 std).
    Denoisers: samples from a fixed noise draw (CM: 1 step; EDM: 18 Heun steps)."""
    if images.ndim != 4:
        return
    device = next(model.parameters()).device
    x0 = images[:n].to(device)
    y = labels[:n].to(device) if labels is not None else None
    if model.kind == "noiser":
        latents = encode(model, x0, eps=model.eps, labels=y)
        grid = torch.cat([x0, (latents / model.T / 3).clamp(-1, 1)])
    else:
        z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(device) * model.T
        if model.kind == "cm":
            grid = cm_sample(model, z, [model.T], labels=y, eps=model.eps)
        else:
            sigmas = karras_sigmas(18, model.eps, model.T).flip(0)
            grid = ode_sample(model, z, sigmas, labels=y, method="heun")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_display(grid).cpu(), str(path), nrow=n, padding=1)
