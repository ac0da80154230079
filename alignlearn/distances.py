"""Per-sample distances d(a, b) for consistency losses (iCT, Song & Dhariwal 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .errors import UserError

DISTANCES = ("pseudo-huber", "l2", "lpips")
Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(||a - b||^2 + c^2) - c per sample (iCT Eq. 11)."""
    sq = (a - b).flatten(1).pow(2).sum(1)
    return torch.sqrt(sq + c**2) - c


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per sample."""
    return (a - b).flatten(1).pow(2).mean(1)


HUBER_C_PER_SQRT_DIM = 0.00054  # iCT's c = 0.00054 sqrt(d), tuned for data of unit scale


def huber_c(dim: int) -> float:
    return HUBER_C_PER_SQRT_DIM * math.sqrt(dim)


def make_distance(name: str, dim: int, c: float | None = None) -> Distance:
    if name == "pseudo-huber":
        c = huber_c(dim) if c is None else c
        return lambda a, b: pseudo_huber(a, b, c)
    if name == "l2":
        return l2
    if name == "lpips":
        return _lpips_distance()
    raise UserError(f"unknown distance {name!r}; choose from {', '.join(DISTANCES)}")


def _lpips_distance() -> Distance:
    """LPIPS alex as a training distance; its weights as alignlearn.lpips finds them, else one clear error."""
    from .lpips import LpipsUnavailable, load_lpips, lpips_per_image

    try:
        net, _ = load_lpips("alex")
    except LpipsUnavailable as e:
        raise UserError(f"LPIPS distance unavailable ({e}); use pseudo-huber") from None
    return lambda a, b: lpips_per_image(net, a, b)
