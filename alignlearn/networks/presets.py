"""Named backbone sizes: `tiny` for tests and CPU demos, `mnist`, `cifar` (DDPM++-like)."""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from .mlp import MLP, MLPConfig
from .unet import UNet, UNetConfig

PRESETS: dict[str, dict] = {
    "tiny": dict(arch="unet", channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(), dropout=0.0),
    "small": dict(arch="unet", channels=32, channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(), dropout=0.0),
    "mnist": dict(arch="unet", channels=64, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(8,), dropout=0.1),
    "cifar": dict(arch="unet", channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.2),
    "mlp": dict(arch="mlp", hidden=128, depth=3),
}


def preset_config(name: str, *, image_shape: tuple[int, ...], num_classes: int = 0, dropout: float | None = None) -> dict:
    """The backbone config (a JSON-ready dict with an `arch` key) for a preset and data shape."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    cfg = dict(PRESETS[name])
    if cfg["arch"] == "unet":
        if len(image_shape) != 3 or image_shape[1] != image_shape[2]:
            raise UserError(f"preset {name!r} needs square images (C, H, H), got shape {tuple(image_shape)}")
        cfg.update(in_channels=image_shape[0], image_size=image_shape[1])
    else:
        dim = 1
        for s in image_shape:
            dim *= s
        cfg.update(dim=dim)
    cfg["num_classes"] = num_classes
    if dropout is not None and "dropout" in cfg:
        cfg["dropout"] = dropout
    build_backbone(cfg)  # validate now, not at the first step
    return cfg


def build_backbone(cfg: dict) -> nn.Module:
    cfg = dict(cfg)
    arch = cfg.pop("arch")
    try:
        if arch == "unet":
            return UNet(UNetConfig(**cfg))
        if arch == "mlp":
            return MLP(MLPConfig(**cfg))
        if arch == "euler-step":
            from .warm_start import EulerStepBackbone

            return EulerStepBackbone(build_backbone(cfg["inner"]), cfg["sigma_data"])
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid {arch} config: {e}") from None
    raise UserError(f"unknown architecture {arch!r}")

