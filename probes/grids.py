"""PNG figures: labelled image grids (one row block per method)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid


def _strip(images: torch.Tensor, nrow: int) -> torch.Tensor:
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return make_grid(x, nrow=nrow, padding=1, pad_value=1.0)


def save_labelled_grid(blocks: list[tuple[str, torch.Tensor]], path: str | Path, nrow: int | None = None) -> None:
    """Each (label, images) block becomes one labelled grid row; images in [-1, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrow = nrow or max(len(b[1]) for b in blocks)
    strips = [(label, _strip(imgs, nrow)) for label, imgs in blocks]
    width = max(s.shape[2] for _, s in strips)
    height = sum(s.shape[1] for _, s in strips)
    scale = 6.0 / max(width, 1) * 2
    fig, axes = plt.subplots(len(strips), 1, figsize=(max(6.0, width * scale / 2 + 2), height * scale / 2 + 0.4 * len(strips)), squeeze=False)
    for ax, (label, s) in zip(axes[:, 0], strips):
        ax.imshow(s.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
