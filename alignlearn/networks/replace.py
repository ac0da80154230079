"""Swapping a model's modules of one type in place (GroupNorm variants, counter-based dropout)."""

from __future__ import annotations

from typing import Callable

from torch import nn


def replace_modules(model: nn.Module, cls: type[nn.Module], wrap: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace every `cls` in `model` (in place, in module order) by wrap(module); returns `model`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, cls):
                setattr(parent, name, wrap(child))
    return model
