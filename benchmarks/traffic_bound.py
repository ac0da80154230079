"""How fast can a preset's compiled training step be? A memory-traffic floor, from the graphs inductor gets.

    python benchmarks/traffic_bound.py --preset mnist --batch-size 512 --bandwidth-tbs 3.35 --peak-tflops 743 --conv-ms 13.3

A training step of the trainer's compiled network is three graphs: the online pass's forward and backward
(AOT autograd's partition: what the forward saves, the backward reads) and the target pass's no-grad
forward. Inductor runs the convolutions, matrix products and attention as library kernels and fuses the
rest (normalisations, activations, dropout's arithmetic, concatenations, casts, bias and norm gradients)
into its own kernels. Whatever the fusion, every tensor a fused region takes from outside (a library
kernel's output, a saved activation, an input) must be read once and every tensor it hands on must be
written once: summing those over the maximal connected regions of fusible nodes is a floor on the traffic
of the non-library work. `+reduction re-reads` adds one more read of whatever feeds a reduction
(GroupNorm's statistics and the pass that applies them as two kernels, as inductor makes them unless a
group fits one block); dropout, an eager kernel under the trainer's fallback_random (iCT's shared mask),
reads its input and writes its output and mask on top of that.
The optimizer and EMA updates (fp32 Adam: 28 bytes a parameter; each EMA lerp 12; clipping 12) are added.

Traced on the CPU with fake tensors (no memory, no GPU, seconds), under the trainer's inductor settings,
in channels-last memory, with GroupNorm run in fp32 as CUDA autocast runs it (CPU autocast would run it
in bf16). The floor is time = bytes / bandwidth for the fused work, plus --conv-ms (measured library-kernel
time) or, without it, the library FLOPs at the full --peak-tflops; the fraction of peak it allows is the
step's FLOPs over that time. A floor, not a forecast: kernels reach 80-90% of the bandwidth at best.
"""

from __future__ import annotations

import argparse
import operator
from collections import Counter

import torch
from torch import nn

from alignlearn.config import ModelConfig
from alignlearn.models import build_model
from alignlearn.networks.dropout import DROPOUT_RNGS, with_counter_dropout
from alignlearn.networks.norm import GROUP_NORMS, ChannelStatsGroupNorm, with_fp32_group_norms, with_group_norms
from alignlearn.networks.presets import preset_config
from alignlearn.trainer import INDUCTOR_OPTIONS
from throughput import add_inductor_option, apply_inductor_options

LIBRARY_PREFIXES = ("convolution", "mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product", "_efficient_attention",
                    "_flash_attention", "scaled_dot_product")
# Eager random ops (fallback_random); inductor's own (inductor_random: Philox) draw inside its fused kernels.
RANDOM_PREFIXES = ("rand", "bernoulli", "native_dropout")
REDUCTIONS = ("sum", "mean", "var_mean", "var", "amax", "amin", "max", "min", "prod")


def op_name(node) -> str:
    t = node.target
    return t.overloadpacket.__name__ if hasattr(t, "overloadpacket") else getattr(t, "__name__", str(t))


def kind(node) -> str:
    """'library' (a cuDNN/cuBLAS/attention kernel), 'random' (eager RNG), 'source' (graph input) or 'fused'."""
    if node.op == "placeholder":
        return "source"
    if node.op != "call_function":
        return "other"
    if node.target is operator.getitem:  # one output of a multi-output op: it belongs to that op
        return kind(node.args[0])
    name = op_name(node)
    if name.startswith(LIBRARY_PREFIXES):
        return "library"
    if name.startswith(RANDOM_PREFIXES):
        return "random"
    return "fused"


def nbytes(node) -> int:
    v = node.meta.get("val") if hasattr(node, "meta") else None
    if isinstance(v, (tuple, list)):
        return sum(t.numel() * t.element_size() for t in v if isinstance(t, torch.Tensor))
    return v.numel() * v.element_size() if isinstance(v, torch.Tensor) else 0


def fused_regions(gm) -> list[set]:
    """The maximal connected sets of fusible nodes (union-find over fusible-to-fusible edges)."""
    parent = {}

    def find(n):
        while parent[n] is not n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    nodes = [n for n in gm.graph.nodes if kind(n) == "fused"]
    for n in nodes:
        parent[n] = n
    for n in nodes:
        for m in n.all_input_nodes:
            if m in parent:
                parent[find(m)] = find(n)
    regions: dict = {}
    for n in nodes:
        regions.setdefault(find(n), set()).add(n)
    return list(regions.values())


def region_bytes(region: set) -> tuple[int, int, int]:
    """(bytes read from outside, bytes handed on, extra bytes if each reduction's inputs are read again)."""
    sources = {m for n in region for m in n.all_input_nodes if m not in region}
    read = sum(nbytes(m) for m in sources)
    written = sum(nbytes(n) for n in region if any(u not in region for u in n.users))
    # Sources that feed a reduction inside the region (walking back through fused nodes only).
    reduced, stack = set(), [n for n in region if op_name(n) in REDUCTIONS]
    seen = set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        for m in n.all_input_nodes:
            if m in region:
                stack.append(m)
            else:
                reduced.add(m)
    return read, written, sum(nbytes(m) for m in reduced)


def graph_traffic(gm) -> dict:
    regions = fused_regions(gm)
    read = written = reread = 0
    for r in regions:
        a, b, c = region_bytes(r)
        read, written, reread = read + a, written + b, reread + c
    # An eager random op (dropout under fallback_random) reads its input and writes its outputs itself,
    # on top of the regions that write that input and read those outputs.
    ops = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is not operator.getitem]
    random = sum(nbytes(n) + sum(nbytes(m) for m in n.all_input_nodes) for n in ops if kind(n) == "random")
    library = Counter(op_name(n) for n in ops if kind(n) == "library")
    return dict(regions=len(regions), read=read, written=written, reread=reread, random=random, library=library)


def example_inputs(batch: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A channels-last image batch and its noise levels (under a FakeTensorMode: no memory)."""
    return torch.randn(batch, *shape).contiguous(memory_format=torch.channels_last), torch.full((batch,), 3.0)


class CudaAutocastChannelStatsGroupNorm(ChannelStatsGroupNorm):
    """The per-channel GroupNorm with the fp32 result it has under CUDA autocast, for a trace on the CPU."""

    @staticmethod
    def fp32_result(x: torch.Tensor) -> bool:
        return torch.is_autocast_enabled(x.device.type)


def as_under_cuda_autocast(model: nn.Module, group_norm: str) -> nn.Module:
    """Every GroupNorm in `model` computed as CUDA autocast runs it (fp32, fp32 result), natively or per channel."""
    if group_norm == "per-channel":
        return with_group_norms(model, CudaAutocastChannelStatsGroupNorm)
    return with_fp32_group_norms(model)


def capture_graphs(preset: str, batch: int, shape: tuple[int, ...], parameterisation: str,
                   group_norm: str = "native", dropout_rng: str = "replay") -> tuple[list, nn.Module]:
    """[(name, graph)] of the compiled network's training forward, backward and no-grad forward, and the model."""
    from functorch.compile import make_boxed_func
    from torch._inductor.compile_fx import compile_fx
    from torch._subclasses.fake_tensor import FakeTensorMode

    graphs = []

    def backend(gm, inputs):
        def record(g, ex, **kw):
            name = "backward" if kw.get("is_backward") else "no-grad forward" if kw.get("is_inference") else "training forward"
            graphs.append((name, g))
            return make_boxed_func(g.forward)  # runs on fake tensors: the graphs are what is wanted
        return compile_fx(gm, inputs, inner_compile=record)

    model = build_model(ModelConfig(parameterisation=parameterisation, backbone=preset_config(preset, image_shape=shape)))
    as_under_cuda_autocast(model, group_norm)
    if dropout_rng == "counter":
        with_counter_dropout(model)
    model = model.to(memory_format=torch.channels_last).train()
    # Static shapes: after other compilations of the same code in this process (a test session), dynamo
    # would otherwise trace sizes as symbols, and bytes must be numbers.
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, dynamic=False)
    with torch._inductor.config.patch(dict(INDUCTOR_OPTIONS)), FakeTensorMode(allow_non_fake_inputs=True):
        x, t = example_inputs(batch, shape)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = compiled(x, t)
        y.float().square().mean().backward()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            compiled(x, t)
    return graphs, model


def network_step_flops(model: nn.Module, batch: int, shape: tuple[int, ...]) -> int:
    """FLOPs of one training step of the network: a forward and backward, and a no-grad forward."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    with FakeTensorMode(allow_non_fake_inputs=True), FlopCounterMode(display=False) as fc:
        x, t = example_inputs(batch, shape)
        model(x, t).float().square().mean().backward()
        with torch.no_grad():
            model(x, t)
    return fc.get_total_flops()


def add_step_args(p: argparse.ArgumentParser) -> None:
    """The options that pick the traced step (shared with gpu_codegen.py)."""
    p.add_argument("--preset", default="mnist")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--parameterisation", default="noiser")
    p.add_argument("--group-norm", choices=GROUP_NORMS, default="native", help="GroupNorm statistics (networks/norm.py)")
    p.add_argument("--dropout-rng", choices=DROPOUT_RNGS, default="replay", help="the shared mask (networks/dropout.py)")
    add_inductor_option(p)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_args(p)
    p.add_argument("--bandwidth-tbs", type=float, default=3.35, help="memory bandwidth, TB/s (H100 SXM: 3.35, H200: 4.8)")
    p.add_argument("--peak-tflops", type=float, default=743.0, help="dense bf16 peak, TFLOP/s")
    p.add_argument("--conv-ms", type=float, default=None, help="measured time of the library kernels per step, ms")
    p.add_argument("--emas", type=int, default=2, help="EMA copies updated each step (ct-inversion: 2)")
    a = p.parse_args(argv)
    apply_inductor_options(a.inductor)
    shape = (a.channels, a.image_size, a.image_size)
    graphs, model = capture_graphs(a.preset, a.batch_size, shape, a.parameterisation, a.group_norm, a.dropout_rng)
    if len(graphs) != 3:
        raise SystemExit(f"expected 3 compiled graphs, inductor was given {len(graphs)}: {[n for n, _ in graphs]}")
    n_params = sum(p.numel() for p in model.parameters())
    flops = network_step_flops(model, a.batch_size, shape)
    print(f"{a.preset} preset, batch {a.batch_size}, {n_params / 1e6:.2f} M parameters, {flops / 1e12:.2f} TFLOP per step")
    print(f"{'graph':18s} {'regions':>7s} {'read GB':>8s} {'write GB':>8s} {'re-read':>8s} {'dropout':>7s}  library kernels")
    report, tot = {"graphs": {}, "flops": flops}, Counter()
    for name, gm in graphs:
        t = report["graphs"][name] = graph_traffic(gm)
        lib = ", ".join(f"{k} {v}" for k, v in sorted(t["library"].items()))
        print(f"{name:18s} {t['regions']:7d} {t['read'] / 1e9:8.2f} {t['written'] / 1e9:8.2f} {t['reread'] / 1e9:8.2f} "
              f"{t['random'] / 1e9:7.2f}  {lib}")
        tot.update({k: t[k] for k in ("read", "written", "reread", "random")})
    update = n_params * (28 + 12 * a.emas + 12)
    print(f"optimizer + {a.emas} EMA + clipping: {update / 1e9:.2f} GB")
    # Without a measurement, the library kernels at the full peak (all counted FLOPs are theirs).
    lib_ms = a.conv_ms if a.conv_ms is not None else flops / (a.peak_tflops * 1e12) * 1e3
    floor = tot["read"] + tot["written"] + tot["random"] + update
    for label, b in (("floor", floor), ("+reduction re-reads", floor + tot["reread"])):
        ms = b / (a.bandwidth_tbs * 1e12) * 1e3
        step = ms + lib_ms
        frac = flops / (step * 1e-3) / (a.peak_tflops * 1e12)
        report[label] = dict(bytes=b, ms=ms, step_ms=step, peak_fraction=frac)
        print(f"{label:20s} {b / 1e9:6.2f} GB = {ms:5.2f} ms at {a.bandwidth_tbs} TB/s; + {lib_ms:.1f} ms library "
              f"kernels = {step:.1f} ms/step, at most {100 * frac:.1f}% of peak")
    return report


if __name__ == "__main__":
    main()
