"""Noise-level and class embeddings shared by the backbones."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionalEmbedding(nn.Module):
    """Transformer sinusoids of scale * c_noise (DDPM++ / iCT).

    iCT feeds 1000 * c_noise: with c_noise = ln(t)/4 spanning about 2.7 units, the
    high frequencies then separate neighbouring Karras levels.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_positions: float = 10000.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_positions) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        arg = (self.scale * c_noise.float())[:, None] * self.freqs[None, :]
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


class ConditionEmbedding(nn.Module):
    """Embedding of (c_noise, label): sinusoids -> MLP, plus a learned class vector.

    Labels live in [0, num_classes]; index num_classes is the null label that
    classifier-free guidance trains with.
    """

    def __init__(self, base_dim: int, emb_dim: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.noise = PositionalEmbedding(base_dim)
        self.mlp = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None

    def forward(self, c_noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        # Sinusoids are computed in fp32; the MLP runs in its own dtype (fp16/bf16 exports).
        emb = self.mlp(self.noise(c_noise).to(self.mlp[0].weight.dtype))
        if self.label is not None:
            if labels is None:
                labels = torch.full((c_noise.shape[0],), self.num_classes, dtype=torch.long, device=c_noise.device)
            emb = emb + self.label(labels)
        return torch.nn.functional.silu(emb)
