"""A small MLP backbone F(x, c_noise, labels) for low-dimensional toy data (report Figure 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .embedding import ConditionEmbedding


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 1
    hidden: int = 128
    depth: int = 3
    num_classes: int = 0
    fourier: int = 6


class MLP(nn.Module):
    """x and the noise embedding concatenated, `depth` SiLU layers, linear out (zero-initialised)."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = ConditionEmbedding(cfg.hidden // 2, cfg.hidden, cfg.num_classes)
        layers: list[nn.Module] = []
        # Sinusoids of the input at octave frequencies: plain MLPs are slow to fit the
        # steep ramps of a noiser on low-dimensional data (spectral bias; Tancik et al. 2020).
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(cfg.fourier, dtype=torch.float32), persistent=False)
        width = cfg.dim * (1 + 2 * cfg.fourier) + cfg.hidden
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.hidden), nn.SiLU()]
            width = cfg.hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(cfg.hidden, cfg.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x_flat = x.flatten(1)
        arg = (x_flat[:, :, None] * self.freqs).flatten(1)
        h = torch.cat([x_flat, torch.sin(arg), torch.cos(arg), self.embed(c_noise, labels)], dim=1)
        return self.out(self.body(h)).reshape(x.shape)
