"""Does inductor keep a preset's compiled training graphs in channels-last memory on the GPU?

    python benchmarks/layout_decision.py --preset mnist
    python benchmarks/layout_decision.py --preset mnist --inductor force_layout_optimization=true

Inductor's layout optimisation (channels-last buffers between convolutions) is decided per graph by
a heuristic (torch/_inductor/graph.py, GraphLowering.decide_layout_opt): on CUDA it is off for a
training forward graph in which any 3x3 convolution has at least twice as many input as output
channels (a UNet decoder after its skip concatenation) and for every backward graph (it holds
convolution_backward calls, and only convolution nodes count), while a no-grad graph is judged by a
FLOP-weighted estimate instead; force_layout_optimization turns it on for all. On the CPU with
oneDNN it is always on, so this turns oneDNN off for the run to take the CUDA path of the heuristic;
it compiles the preset's forward+backward and no-grad forward (batch 2, no GPU needed) and prints
each graph's decision and the convolutions that tipped it.
"""

from __future__ import annotations

import argparse

import torch

from alignlearn.config import ModelConfig
from alignlearn.models import build_model
from alignlearn.networks.presets import preset_config
from alignlearn.trainer import compile_for_training
from throughput import add_inductor_option, apply_inductor_options


def conv_weights(gm) -> list[torch.Tensor]:
    """The (fake) weights of the graph's convolution nodes, the nodes the heuristic looks at."""
    return [n.args[1].meta["val"] for n in gm.graph.nodes if n.target is torch.ops.aten.convolution.default]


def in_ge_2x_out(weights: list[torch.Tensor]) -> list[tuple[int, ...]]:
    """Shapes of the 3x3-or-larger convolution weights that the heuristic counts against channels-last."""
    return [tuple(w.shape) for w in weights if w.size(0) * 2 <= w.size(1) and w.size(2) > 1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mnist")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=32)
    add_inductor_option(p)
    a = p.parse_args(argv)
    apply_inductor_options(a.inductor)
    from torch._inductor.graph import GraphLowering  # an internal API: this script follows it, nothing else does

    decisions = []
    decide = GraphLowering.decide_layout_opt

    def recording(gm, *, is_inference):
        on = decide(gm, is_inference=is_inference)
        weights = conv_weights(gm)
        decisions.append((is_inference, on, len(weights), in_ge_2x_out(weights)))
        return on

    GraphLowering.decide_layout_opt = staticmethod(recording)
    mkldnn, caches = torch.backends.mkldnn.enabled, torch._inductor.config.force_disable_caches
    torch.backends.mkldnn.enabled = False  # the CUDA path of the heuristic (oneDNN always takes channels-last)
    torch._inductor.config.force_disable_caches = True  # a cached graph is not lowered again: no decision to see
    try:
        shape = (a.channels, a.image_size, a.image_size)
        model = build_model(ModelConfig(parameterisation="noiser", backbone=preset_config(a.preset, image_shape=shape)))
        model = compile_for_training(model.to(memory_format=torch.channels_last).train())
        x = torch.randn(2, *shape).contiguous(memory_format=torch.channels_last)
        t = torch.full((2,), 3.0)
        model(x, t).float().square().mean().backward()
        with torch.no_grad():
            model(x, t)
    finally:
        GraphLowering.decide_layout_opt = staticmethod(decide)
        torch.backends.mkldnn.enabled, torch._inductor.config.force_disable_caches = mkldnn, caches
    if not decisions:
        raise SystemExit("inductor lowered no graph: this torch's GraphLowering no longer decides layouts here")
    for inference, on, convs, against in decisions:
        kind = "no-grad forward" if inference else "training forward" if convs else "backward"
        why = f"; 3x3 convolutions with in >= 2 x out channels: {against}" if against else ""
        why += "; convolution_backward does not count" if not convs else ""
        print(f"{kind:16s} channels-last layout optimisation {'ON ' if on else 'OFF'} ({convs} convolutions{why})")


if __name__ == "__main__":
    main()
