"""Latent refinement: gradient steps on a 1-NFE latent through the 1-NFE consistency decoder."""

from __future__ import annotations

import torch

from .loading import Loaded


def refine_latents(cm: Loaded, x0: torch.Tensor, z: torch.Tensor, labels, steps: int, lr: float) -> torch.Tensor:
    """K Adam steps on the latent lowering ||CM(z, T) - x0||^2: each step one forward and one backward pass."""
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    y = cm.labels(labels)
    cm.model.requires_grad_(False)
    for _ in range(steps):
        x = cm.model(z, torch.full((z.shape[0],), cm.model.T, device=z.device), y)
        loss = (x - x0).pow(2).flatten(1).sum(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return z.detach()
