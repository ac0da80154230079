"""Inductor's CUDA code for a preset's compiled training step, generated on a machine without a GPU.

    python benchmarks/gpu_codegen.py --preset mnist --batch-size 512 --inductor force_layout_optimization=true \\
        --group-norm per-channel --out code.log

The step's three graphs (the online pass's forward and backward, the target pass's no-grad forward) are
traced on the CPU with fake tensors as benchmarks/traffic_bound.py traces them, moved to fake CUDA tensors,
and lowered by inductor for an H100 (its properties stated, not queried); generation stops where the code
would be compiled, so no driver, GPU or Triton compiler runs. The code is written in the form of a
TORCH_LOGS=output_code log, which benchmarks/inductor_code.py reads (launches, transposing kernels, and the
bytes inductor estimates each kernel moves: generated under profile_bandwidth, which writes that estimate
into every kernel and changes none).

An emulation, with known differences from the code a GPU run generates: attention runs as matrix products
and a softmax (the CPU trace cannot pick cuDNN's attention), autotuning never runs (it picks block sizes,
not kernels), and inductor may split reductions differently. Checked against session 11's real code for
the mnist step with forced layouts (H100, TORCH_LOGS=output_code): the backward's Triton launches 518
here against 540 there, its transposing launches named after native_group_norm_backward 34 against 48,
the training forward's transposing launches 13 against 12 (all of attention in both). So it can tell
which way a change moves the layout copies before a GPU is lent, not what the step costs.
"""

from __future__ import annotations

import argparse
import contextlib
import types
from pathlib import Path
from unittest import mock

import torch

from inductor_code import report, split_graphs, summarise
from throughput import apply_inductor_options
from traffic_bound import add_step_args, capture_graphs

H100 = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                             total_memory=80 * 2**30, regs_per_multiprocessor=65536, max_threads_per_multi_processor=2048,
                             max_threads_per_block=1024, warp_size=32, shared_memory_per_block_optin=232448,
                             L2_cache_size=50 * 2**20, gcnArchName="")
AOT_IDS = {"training forward": "1_forward", "backward": "1_backward", "no-grad forward": "0_inference"}


def cudnn_memory_format(inp: torch.Tensor, weight: torch.Tensor, backend) -> torch.memory_format:
    """cuDNN's choice for a convolution's output (cudnn_conv_suggest_memory_format): channels-last if its
    input or weight is; asking the real function needs a device."""
    def channels_last(t):
        return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()

    return torch.channels_last if channels_last(inp) or channels_last(weight) else torch.contiguous_format


@contextlib.contextmanager
def pretend_h100():
    """torch and inductor believe an H100 is present for what lowering and code generation ask of it."""
    import torch._inductor.codegen.triton as triton_codegen
    import torch._inductor.scheduler as scheduler
    import torch.utils._triton as triton_utils
    from torch._dynamo.device_interface import CudaInterface

    patches = [
        (torch.cuda, "is_available", lambda: True),
        (torch.cuda, "device_count", lambda: 1),
        (torch.cuda, "current_device", lambda: 0),
        (torch.cuda, "get_device_properties", lambda *a, **k: H100),
        (torch.cuda, "get_device_capability", lambda *a, **k: (H100.major, H100.minor)),
        (torch.cuda, "_exchange_device", lambda idx: 0),
        (torch.cuda, "_maybe_exchange_device", lambda idx: 0),
        (torch.cuda, "get_rng_state", lambda *a, **k: torch.zeros(16, dtype=torch.uint8)),
        (torch.cuda, "set_rng_state", lambda *a, **k: None),
        (CudaInterface, "get_device_properties", staticmethod(lambda *a, **k: H100)),
        (CudaInterface, "get_compute_capability", staticmethod(lambda *a, **k: 10 * H100.major + H100.minor)),
        (CudaInterface, "is_available", staticmethod(lambda: True)),
        (CudaInterface, "current_device", staticmethod(lambda: 0)),
        (CudaInterface, "device_count", staticmethod(lambda: 1)),
        (triton_utils, "has_triton", lambda: True),
        (scheduler, "has_triton", lambda: True),
        # the backend's hash only keys inductor's caches; computing it loads the CUDA driver
        (triton_utils, "triton_hash_with_backend", lambda: "0" * 64),
        (triton_codegen, "triton_hash_with_backend", lambda: "0" * 64),
        (torch._C, "_conv_determine_backend_memory_format", cudnn_memory_format),
    ]
    with contextlib.ExitStack() as stack:
        for obj, name, value in patches:
            if hasattr(obj, name):  # other torch releases lack some of these names (and need no stand-in for them)
                stack.enter_context(mock.patch.object(obj, name, value))
        yield


class _Generated(Exception):
    """Raised once the wrapper code exists, before anything would be compiled."""


def on_cuda(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The graph's factory calls made on the CPU moved to the GPU: zeros, full (a keyword argument) and, under
    fallback_random=false, inductor_seeds (a positional one)."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    for n in gm.graph.nodes:
        if n.kwargs.get("device") == cpu:
            n.kwargs = {**n.kwargs, "device": cuda}
        n.args = tuple(cuda if a == cpu else a for a in n.args)
    gm.recompile()
    return gm


def generate(gm: torch.fx.GraphModule, name: str) -> str:
    """Inductor's CUDA module for one graph traced on the CPU."""
    from torch._inductor.compile_fx import compile_fx_inner
    from torch._inductor.graph import GraphLowering
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        inputs = [torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="cuda") if isinstance(v, torch.Tensor) else v
                  for v in (n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder")]
    on_cuda(gm)
    FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*inputs)

    code = []
    real_codegen = GraphLowering.codegen

    def codegen(self, *args, **kwargs):
        out = real_codegen(self, *args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        code.append(getattr(out, "value", out))
        raise _Generated

    with mock.patch.object(GraphLowering, "codegen", codegen), torch._inductor.config.patch(fx_graph_cache=False):
        try:
            compile_fx_inner(gm, inputs, is_backward=name == "backward", is_inference=name == "no-grad forward")
        except Exception as e:  # inductor wraps what its lowering raises
            if not code:
                raise RuntimeError(f"inductor generated no code for the {name}: {e}") from e
    return code[0]


def as_output_code_log(modules: list[tuple[str, str]]) -> str:
    """The modules as TORCH_LOGS=output_code prints them, each headed by its AOT ID line."""
    lines = []
    for name, code in modules:
        lines.append(f"[__output_code] # AOT ID: ['{AOT_IDS[name]}']")
        lines += ["[__output_code] " + line for line in code.splitlines()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_args(p)
    p.add_argument("--graph", action="append", choices=list(AOT_IDS), default=None,
                   help="generate only this graph's code (repeatable; default: all three)")
    p.add_argument("--out", required=True, help="the generated code, as a TORCH_LOGS=output_code log")
    a = p.parse_args(argv)
    apply_inductor_options(a.inductor)
    with sdpa_kernel([SDPBackend.MATH]):  # CUDA has no lowering of the CPU's fused attention
        graphs, _ = capture_graphs(a.preset, a.batch_size, (a.channels, a.image_size, a.image_size), a.parameterisation,
                                   a.group_norm, a.dropout_rng)
    from alignlearn.trainer import INDUCTOR_OPTIONS

    # profile_bandwidth writes each kernel's traffic estimate into its source and changes no kernel
    with pretend_h100(), torch._inductor.config.patch({**dict(INDUCTOR_OPTIONS), "profile_bandwidth": True}):
        modules = [(name, generate(gm, name)) for name, gm in graphs if a.graph is None or name in a.graph]
    log = as_output_code_log(modules)
    Path(a.out).write_text(log)
    summaries = [summarise(g) for g in split_graphs(log)]
    print(report(summaries))
    return summaries


if __name__ == "__main__":
    main()
