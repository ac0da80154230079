"""A noiser backbone that begins as one Euler step of a diffusion model's PF-ODE.

The noiser is f(x, t) = x + (s - t) F(c_in x, c_noise) with s the end of t's segment (T with one
segment), and one Euler step of dx/dt = (x - D(x, t)) / t from t to s is x + (s - t)(x - D)/t. So the
noiser equals that step when F = (x - D)/t. With EDM's D = c_skip x + c_out G(c_in x, c_noise),
c_skip = σ²/(t²+σ²), c_out = tσ/√(t²+σ²), c_in = 1/√(t²+σ²), and y = c_in x:

    (x - D)/t = t x/(t²+σ²) - σ G/√(t²+σ²) = (t y - σ G(y, c_noise)) / √(t²+σ²),   t = exp(4 c_noise).

F below is that expression around the diffusion model's network G (same config, weights copied at
initialisation); training then moves G's weights, and the fixed expression keeps the Euler step as the
starting point. Both parameterisations share c_in and c_noise, so G sees exactly its own inputs.
"""

from __future__ import annotations

import torch
from torch import nn


class EulerStepBackbone(nn.Module):
    def __init__(self, inner: nn.Module, sigma_data: float):
        super().__init__()
        self.inner, self.sigma_data = inner, float(sigma_data)

    def forward(self, y: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        G = self.inner(y, c_noise, labels)
        ctype = torch.float64 if y.dtype == torch.float64 else torch.float32  # bf16 networks: the sum in fp32
        t = torch.exp(4 * c_noise.to(ctype)).view((-1,) + (1,) * (y.ndim - 1))
        return ((t * y.to(ctype) - self.sigma_data * G.to(ctype)) / torch.sqrt(t**2 + self.sigma_data**2)).to(G.dtype)


def euler_step_config(dm_backbone: dict, sigma_data: float) -> dict:
    """The backbone config of a noiser warm-started from a diffusion model with backbone `dm_backbone`."""
    return {"arch": "euler-step", "sigma_data": float(sigma_data), "num_classes": dm_backbone.get("num_classes", 0),
            "inner": dict(dm_backbone)}
