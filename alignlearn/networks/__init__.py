"""Backbones F(x, c_noise, labels) and their named size presets."""

from .mlp import MLP, MLPConfig
from .presets import PRESETS, build_backbone, preset_config
from .unet import UNet, UNetConfig

__all__ = ["MLP", "MLPConfig", "PRESETS", "UNet", "UNetConfig", "build_backbone", "preset_config"]
