"""GroupNorm for exported graphs, with statistics that stay accurate under ONNX Runtime's float sums.

ONNX Runtime's CPU kernels for InstanceNormalization and ReduceMean (what the exporter turns
nn.GroupNorm into) add a group's C/G * H * W floats nearly in sequence, so a group whose mean is
large next to its spread (the flat background of a digit after the first convolution) gets a mean
and variance ~1e-6 off. A noiser's map is steep (dx_T/dx ~ T / sigma_data), and on real MNIST
digits that took a trained `mnist` noiser's export to 3e-5 from the exact latents, ten times
PyTorch's own error and past the fp32 tolerance of 1e-5. Summing in two levels, per channel over
H * W and then over the group's channels, with the variance combined by the parallel formula
(Chan et al. 1979), brings the export back to PyTorch's accuracy at no measured cost in speed on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from alignlearn.networks.norm import replace_group_norms


class TwoLevelGroupNorm(nn.Module):
    """nn.GroupNorm's function, computed from per-channel statistics; holds the original's parameters.
    Training's ChannelStatsGroupNorm (alignlearn/networks/norm.py) combines the same statistics but forms
    the output as x * scale + shift, which loses here what the centred values keep."""

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        if not gn.affine:
            raise ValueError("TwoLevelGroupNorm expects an affine GroupNorm")
        self.num_groups, self.eps = gn.num_groups, gn.eps
        self.weight, self.bias = gn.weight, gn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        g = x.reshape(n, self.num_groups, c // self.num_groups, -1)  # (N, G, C/G, H*W)
        mean_c = g.mean(-1, keepdim=True)
        d = g - mean_c
        var_c = (d * d).mean(-1, keepdim=True)  # a Mul, not Pow: one cheap pass in ONNX Runtime
        mean = mean_c.mean(-2, keepdim=True)
        e = mean_c - mean
        var = (var_c + e * e).mean(-2, keepdim=True)  # within- plus between-channel variance
        scale = torch.rsqrt(var + self.eps) * self.weight.reshape(1, self.num_groups, -1, 1)
        # (g - mean) * scale + bias with g - mean = d + e: d is reused, so the output costs two passes
        shift = e * scale + self.bias.reshape(1, self.num_groups, -1, 1)
        return (d * scale + shift).reshape(x.shape)


def with_two_level_group_norms(model: nn.Module) -> nn.Module:
    """Every nn.GroupNorm in `model` (in place) replaced by its TwoLevelGroupNorm; returns `model`."""
    return replace_group_norms(model, TwoLevelGroupNorm)
