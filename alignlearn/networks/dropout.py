"""Counter-based dropout: the mask is a hash of (step seed, dropout site, element position).

iCT's target pass must drop the same units as the online pass. The default way replays the RNG state
between the passes (objectives._replay_rng), which holds only while both passes draw their random numbers
in the same order: eager PyTorch's (inductor's fallback_random), an unfused kernel per dropout in compiled
training. Here the mask is a pure function of a seed that the trainer sets once per step, of the module's
site number and of each element's logical position, so the two passes agree by construction,
whatever the memory layout or the order of the graphs' random ops, and inductor fuses the hash into the
kernels around it (integer arithmetic on the index, nothing read from memory).

The hash is the 32-bit integer mixer x ^= x >> 16; x *= 0x45d9f3b (twice), x ^= x >> 16: a bijection of
32-bit values with good avalanche. It runs on int32 tensors, the multiplications wrapping modulo 2**32 as
PyTorch's and Triton's integer arithmetic does (two's complement), the shifts made logical by a mask. In the
H100 kernel that fuses it with a SiLU it costs 12 SASS instructions an element (38 against 26 without; in
int64 it cost 18), near the 44 an element at which such a kernel stops being bound by memory
(benchmarks/kernel_sass.py). An element is kept when the hash's low 24 bits are at least round(p * 2**24): the
keep probability is 1 - p to within 2**-24. Positions 2**32 apart share a mask bit.
"""

from __future__ import annotations

import itertools
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .replace import replace_modules

DROPOUT_RNGS = ("replay", "counter")  # --dropout-rng: objectives._replay_rng's default, or this module

_MASK32 = 0xFFFFFFFF
_MULT = 0x45D9F3B  # below 2**31: an int32 constant
_SITE_STEP = 0x9E3779B9  # the golden-ratio increment: consecutive sites far apart before mixing


def _signed32(v: int) -> int:
    """A Python int's low 32 bits as the value an int32 holds with those bits."""
    v &= _MASK32
    return v - (1 << 32) if v >= 1 << 31 else v


def _as_int32(x: torch.Tensor) -> torch.Tensor:
    """The low 32 bits of an int64 tensor as int32 (two's complement), by exact int64 arithmetic."""
    return (((x & _MASK32) ^ 0x80000000) - 0x80000000).to(torch.int32)


def _shr16(x: torch.Tensor) -> torch.Tensor:
    """The logical right shift by 16 of int32 bits (>> on a signed tensor copies the sign bit in)."""
    return (x >> 16) & 0xFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """The 32-bit mixer on int32 tensors (their bits: equal to the same mixer on the unsigned values)."""
    x = (_shr16(x) ^ x) * _MULT
    x = (_shr16(x) ^ x) * _MULT
    return _shr16(x) ^ x


def _positions(numel: int, device: torch.device) -> torch.Tensor:
    """0, 1, ..., numel - 1 as int32 bits (wrapping past 2**31 - 1, as the hash's domain does)."""
    if numel <= 2**31:
        return torch.arange(numel, device=device, dtype=torch.int32)
    return _as_int32(torch.arange(numel, device=device, dtype=torch.int64))


def keep_mask(shape: torch.Size, p: float, seed: torch.Tensor, site: int) -> torch.Tensor:
    """Bool mask of `shape`, True with probability 1 - p, a function of (seed, site, logical position)."""
    key = mix32(seed.to(torch.int32) ^ _signed32(site * _SITE_STEP))  # seeds are below 2**31 (draw_step_seed)
    index = _positions(shape.numel(), seed.device)
    if len(shape) == 4:  # positions numbered (n, h, w, c): a stored mask is channels-last like the activations; one
        n, c, h, w = shape  # in NCHW order turned the compiled backward's gradients to NCHW (emulated; docs/performance.md)
        index = index.view(n, h, w, c).permute(0, 3, 1, 2)
    else:
        index = index.view(shape)
    h = mix32(index ^ key)
    return (h & 0xFFFFFF) >= round(p * (1 << 24))


def _recompute(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_RECOMPUTE


# The mask's operations are tagged for recomputation in the backward (selective activation checkpointing): left
# to itself, the compiled training step stores each bool mask (1 byte a unit, written and read back), although
# it costs only integer arithmetic on the seed to compute again.
_RECOMPUTE_MASK = partial(create_selective_checkpoint_contexts, _recompute)


class CounterDropout(nn.Module):
    """nn.Dropout's function with a counter-based mask; `seed` (a 0-dim int64 tensor below 2**31, shared by every
    site of a model and not saved in checkpoints) is set by the trainer before each step. Meant for compiled
    training: run eagerly, the hash materialises int32 positions and intermediates (4 bytes per unit each)."""

    def __init__(self, p: float, site: int, seed: torch.Tensor):
        super().__init__()
        self.p, self.site = p, site
        self.register_buffer("seed", seed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = checkpoint(keep_mask, x.shape, self.p, self.seed, self.site, use_reentrant=False,
                          context_fn=_RECOMPUTE_MASK, preserve_rng_state=False)  # the mask draws no random numbers
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), torch.zeros((), dtype=x.dtype, device=x.device))

    def extra_repr(self) -> str:
        return f"p={self.p}, site={self.site}"


def with_counter_dropout(model: nn.Module) -> nn.Module:
    """Every nn.Dropout in `model` (in place) a CounterDropout, numbered in module order, all reading one
    seed tensor; returns `model`. Call it before copying the model (EMA): a copy gets its own seed tensor."""
    seed = torch.zeros((), dtype=torch.int64, device=next(model.parameters()).device)
    sites = itertools.count()
    return replace_modules(model, nn.Dropout, lambda d: CounterDropout(d.p, next(sites), seed))


def draw_step_seed(seeds: list[torch.Tensor]) -> None:
    """One new seed, drawn on the device from the current RNG (no host sync), into every seed tensor: the online
    and target models read the same one for a step's passes."""
    if seeds:
        torch._foreach_copy_(seeds, [torch.randint(2**31 - 1, (), device=seeds[0].device)] * len(seeds))


def dropout_seeds(model: nn.Module) -> list[torch.Tensor]:
    """The distinct seed tensors of a model's CounterDropout sites (one after with_counter_dropout)."""
    seen: dict[int, torch.Tensor] = {}
    for m in model.modules():
        if isinstance(m, CounterDropout):
            seen.setdefault(id(m.seed), m.seed)
    return list(seen.values())
