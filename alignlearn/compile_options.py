"""How the trainer compiles its passes on a GPU: inductor settings, CUDA graphs, and the module swaps they need.

The measurements behind each setting are in docs/performance.md.
"""

from __future__ import annotations

import torch

from .networks.dropout import with_counter_dropout
from .networks.norm import resolve_group_norm, with_channel_stats_group_norms

# fallback_random: inductor draws random numbers as eager PyTorch does. Its own (Philox) dropout would give
# the compiled online pass another mask than the target pass replays from the same RNG state, breaking
# iCT's shared dropout mask. benchmarks/throughput.py varies these (--inductor KEY=VALUE).
INDUCTOR_OPTIONS: dict = {"fallback_random": True}

# --cuda-graphs: without graphs the compiled step is host-bound (the GPU idles between launches).
# force_layout_optimization keeps channels-last buffers in the training graphs too, where inductor's
# heuristic turns that off and cuDNN then converts layouts many times a step. The raised realize_*
# thresholds make the backward recompute each GroupNorm's normalised output where it is read instead of
# storing it in fp32 (same values, fewer bytes). unroll_reductions_threshold=1 keeps the few-value reductions
# of per-channel GroupNorm as reductions, which the raised thresholds would otherwise inline into every
# element's kernel.
CUDA_GRAPH_OPTIONS: dict = {"triton.cudagraphs": True, "force_layout_optimization": True,
                            "realize_reads_threshold": 64, "realize_acc_reads_threshold": 64,
                            "realize_opcount_threshold": 1000, "unroll_reductions_threshold": 1}


def training_inductor_options(cuda_graphs: bool = False) -> dict:
    """The inductor settings of the trainer's compiled passes, with or without --cuda-graphs."""
    return {**INDUCTOR_OPTIONS, **(CUDA_GRAPH_OPTIONS if cuda_graphs else {})}


def compile_for_training(net: torch.nn.Module, cuda_graphs: bool = False) -> torch.nn.Module:
    """torch.compile with the trainer's inductor settings, scoped to this module's graphs."""
    return torch.compile(net, options=training_inductor_options(cuda_graphs))


def swap_training_modules(net: torch.nn.Module, group_norm: str, dropout_rng: str, cuda_graphs: bool) -> None:
    """The modules --group-norm and --dropout-rng choose, swapped in place (same parameters and state dict).
    Call it before copying the model (EMA): the copies then compute the same way, each with its own seed."""
    if resolve_group_norm(group_norm, cuda_graphs) == "per-channel":
        with_channel_stats_group_norms(net)
    if dropout_rng == "counter":
        with_counter_dropout(net)
