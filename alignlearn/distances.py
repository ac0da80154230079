"""Per-sample distances d(a, b) for consistency losses (iCT, Song & Dhariwal 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

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


def lpips_weights_unreachable() -> str | None:
    """Why torchvision cannot provide LPIPS's VGG16 weights now, or None when they are cached or their host
    resolves. Asked offline, torchvision prints a "Downloading" line before it fails; this asks first."""
    import socket
    from urllib.parse import urlparse

    from torchvision.models import VGG16_Weights

    url = urlparse(VGG16_Weights.DEFAULT.url)
    if (Path(torch.hub.get_dir()) / "checkpoints" / Path(url.path).name).is_file():
        return None
    try:
        socket.getaddrinfo(url.hostname, 443)
    except OSError as e:
        return f"VGG16 weights not cached and {url.hostname} unreachable ({e.strerror or e})"
    return None


def _lpips_distance() -> Distance:
    # LPIPS needs ImageNet backbone weights that torchvision downloads; refuse clearly when absent.
    reason = lpips_weights_unreachable()
    if reason:
        raise UserError(f"LPIPS distance unavailable ({reason}); use pseudo-huber")
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        metric = LearnedPerceptualImagePatchSimilarity(net_type="vgg", reduction="none")
    except Exception as e:  # noqa: BLE001 - any failure to get the weights means "unavailable"
        raise UserError(f"LPIPS distance unavailable (its VGG weights could not be loaded: {type(e).__name__}); use pseudo-huber") from None

    def d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        metric.to(a.device)
        rgb = (lambda x: x.expand(-1, 3, -1, -1)) if a.shape[1] == 1 else (lambda x: x)
        return metric.net(rgb(a.float().clamp(-1, 1)), rgb(b.float().clamp(-1, 1))).flatten()

    return d
