"""GroupNorm from per-channel statistics, for compiled training in channels-last memory.

nn.GroupNorm reduces each (sample, group) over its C/G channels and all pixels. In channels-last
memory a group is a few adjacent values in every pixel's row of C channels, so a reduction that
owns one group reads a small piece of each row: scattered reads. Reducing per channel over the
pixels instead (neighbouring channels are neighbouring addresses, so neighbouring reductions read
one row together) and then combining each group's C/G channel means and variances (the parallel
variance formula, Chan et al. 1979) gives the same function from contiguous reads. The parameters
and state-dict keys are nn.GroupNorm's: checkpoints and exports do not see the difference.
The export's TwoLevelGroupNorm (export/groupnorm.py) combines the same statistics but is written for
ONNX Runtime's accuracy (centred values reused for the output); this one for one read of the input
(torch.var_mean) and one fused output pass in training.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as nnf
from torch import nn

from .replace import replace_modules


class ChannelStatsGroupNorm(nn.GroupNorm):
    """nn.GroupNorm's function: per-channel mean and variance first, then per group."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        g = self.num_groups
        # fp32 statistics for bf16/fp16 inputs, as autocast runs nn.GroupNorm in fp32
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        var_c, mean_c = torch.var_mean(xf, dim=tuple(range(2, x.ndim)), correction=0)  # (N, C)
        mean_c, var_c = mean_c.view(n, g, c // g), var_c.view(n, g, c // g)
        mean = mean_c.mean(-1, keepdim=True)
        var = (var_c + (mean_c - mean).square()).mean(-1, keepdim=True)  # within- plus between-channel
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight.view(g, c // g)
        shift = -mean * scale
        if self.affine:
            shift = shift + self.bias.view(g, c // g)
        shape = (n, c) + (1,) * (x.ndim - 2)
        y = xf * scale.reshape(shape) + shift.reshape(shape)
        return y if self.fp32_result(x) else y.to(x.dtype)

    @staticmethod
    def fp32_result(x: torch.Tensor) -> bool:
        # CUDA autocast runs nn.GroupNorm in fp32 (its fp32 list) and returns fp32; elsewhere the input's dtype
        return x.is_cuda and torch.is_autocast_enabled("cuda")


def replace_group_norms(model: nn.Module, wrap) -> nn.Module:
    """Replace every nn.GroupNorm in `model` (in place) by wrap(group_norm); returns `model`."""
    return replace_modules(model, nn.GroupNorm, wrap)


class FP32GroupNorm(nn.GroupNorm):
    """nn.GroupNorm computed in fp32 with an fp32 result whatever the input's dtype: what CUDA autocast does
    (group_norm is on its fp32 list). CPU autocast leaves a bf16 input in bf16, so CPU code that must see the
    GPU's precisions (tests, benchmarks/traffic_bound.py) swaps this in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return nnf.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps)


def _same_parameters(cls: type[nn.GroupNorm], gn: nn.GroupNorm) -> nn.GroupNorm:
    new = cls(gn.num_groups, gn.num_channels, gn.eps, gn.affine)
    if gn.affine:
        new.weight, new.bias = gn.weight, gn.bias  # the same Parameter objects: optimizer and EMA see no change
    return new


def with_group_norms(model: nn.Module, cls: type[nn.GroupNorm]) -> nn.Module:
    """Every nn.GroupNorm in `model` (in place) an instance of `cls` with the same parameters; returns `model`."""
    return replace_group_norms(model, partial(_same_parameters, cls))


def with_channel_stats_group_norms(model: nn.Module) -> nn.Module:
    """Every nn.GroupNorm in `model` (in place) computed from per-channel statistics; returns `model`."""
    return with_group_norms(model, ChannelStatsGroupNorm)


def with_fp32_group_norms(model: nn.Module) -> nn.Module:
    """Every nn.GroupNorm in `model` (in place) computed in fp32 as CUDA autocast runs it; returns `model`."""
    return with_group_norms(model, FP32GroupNorm)


GROUP_NORMS = ("native", "per-channel")  # --group-norm also takes "auto"


def resolve_group_norm(group_norm: str, cuda_graphs: bool) -> str:
    """"auto": per-channel statistics under --cuda-graphs, where they were measured faster (1.16x the native
    GroupNorm's img/s for the mnist preset on an H100, docs/performance.md), else native (no gain measured
    without graphs, where the step is host-bound)."""
    if group_norm != "auto":
        return group_norm
    return "per-channel" if cuda_graphs else "native"
