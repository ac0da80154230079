"""Do the compiled online pass and the compiled target pass draw the same dropout mask?

    python benchmarks/dropout_masks.py --device cuda --inductor fallback_random=false
    python benchmarks/dropout_masks.py --device cuda --channels-last --cuda-graphs [--dropout-rng counter] [--target ema]

iCT's target pass replays the RNG state of the online pass so both drop the same units. The trainer
compiles both with inductor's fallback_random (eager PyTorch's random numbers). Without it, inductor
draws its own (Philox) numbers from seeds taken from the same generator, which can agree between
the two graphs or not depending on how each graph orders its random ops. This prints the largest
difference between the two passes (float rounding if the masks agree) next to that of a fresh mask.
--target picks the trainer's two patterns: stopgrad (its default) calls one compiled module for both
passes, ema a second compiled module, a copy of the first.
"""

from __future__ import annotations

import argparse
import copy

import torch

from alignlearn.networks.dropout import DROPOUT_RNGS, draw_step_seed, dropout_seeds
from alignlearn.networks.presets import build_backbone, preset_config
from alignlearn.objectives import _replay_rng
from alignlearn.trainer import compile_for_training, swap_training_modules, training_inductor_options
from throughput import add_inductor_option, apply_inductor_options


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", action="store_true",
                   help="weights and input in channels-last memory, as the trainer keeps them on the GPU")
    p.add_argument("--cuda-graphs", action="store_true", help="compile as the trainer's --cuda-graphs does")
    p.add_argument("--dropout-rng", choices=DROPOUT_RNGS, default="replay", help="the trainer's --dropout-rng")
    p.add_argument("--target", choices=("stopgrad", "ema"), default="stopgrad",
                   help="the trainer's --target: the online module itself, or a copy compiled on its own")
    add_inductor_option(p)
    a = p.parse_args(argv)
    apply_inductor_options(a.inductor)
    dev = torch.device(a.device)
    # full fp32 arithmetic: TF32 convolutions (cuDNN's default) round each pass differently by ~1e-3
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    net = build_backbone(preset_config(a.preset, image_shape=(1, 32, 32), dropout=0.3)).to(dev).train()
    swap_training_modules(net, "auto", a.dropout_rng, a.cuda_graphs)  # the trainer's modules: the same graphs
    with torch.no_grad():  # the zero-initialised output layer would hide the mask
        for q in net.parameters():
            q.add_(0.05 * torch.randn_like(q))
    x, t = torch.randn(16, 1, 32, 32, device=dev), torch.full((16,), 5.0, device=dev)
    if a.channels_last:  # inductor picks each graph's buffer layouts by its own heuristic: the two passes may differ
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    online_c, seeds = compile_for_training(net, a.cuda_graphs), dropout_seeds(net)
    target, target_c = net, online_c  # as the trainer does: with a stop-gradient target one compiled module
    if a.target == "ema":
        target = copy.deepcopy(net).requires_grad_(False).train()
        target_c, seeds = compile_for_training(target, a.cuda_graphs), seeds + dropout_seeds(target)
    worst = 0.0
    for _ in range(3):  # the trainer's step, as CUDA graphs see it: nothing else runs between its steps
        torch.compiler.cudagraph_mark_step_begin()  # as the trainer does: one CUDA-graph generation per step
        # as the trainer's zero_grad(set_to_none=True): under CUDA graphs last step's gradients live in the graphs'
        # memory, which this step's graphs reuse, so accumulating into them fails ("accessing tensor output of
        # CUDAGraphs that has been overwritten", H100, sessions 11, 14 and 16, in this check only)
        net.zero_grad(set_to_none=True)
        draw_step_seed(seeds)  # as the trainer does: one new seed per step for both passes (counter dropout)
        with torch.no_grad(), _replay_rng(dev):
            y_target = target_c(x, t).float()  # a copy out of the graph's memory, as the objective's .float()
        y_online = online_c(x, t).float()
        y_online.square().mean().backward()
        worst = max(worst, (y_online.detach() - y_target).abs().max().item())
    # The scale of one other mask, from the eager module: a compiled call outside the step's pattern broke the
    # next step's backward under CUDA graphs, as a third call in its generation (H100, session 11) and in a
    # generation of its own ("output overwritten", H100, session 14).
    with torch.no_grad():
        for s in seeds:
            s.add_(1)
        fresh = (target(x, t).float() - y_target).abs().max().item()  # the eager module, not the compiled one
    same = worst < 1e-2 * max(fresh, 1e-12)  # one differently dropped unit moves the output by O(fresh)
    layout = "channels-last, " if a.channels_last else ""
    layout += "counter dropout, " if a.dropout_rng == "counter" else ""
    layout += f"{a.target} target, "
    print(f"{a.preset}, {layout}inductor {training_inductor_options(a.cuda_graphs)}: online vs target {worst:.3g}, fresh mask {fresh:.3g}: "
          f"{'same mask' if same else 'DIFFERENT masks'}")


if __name__ == "__main__":
    main()
