"""Where one training step's device time goes: torch.profiler over a short `alignlearn train` run.

    python benchmarks/profile_step.py --data mnist-5k --preset mnist --batch-size 512 --steps 10 --device cuda --compile

Prints the device time per step, how much of the step the device sits idle (host-bound steps),
a split by kind (inductor's kernels, convolution, matrix product, ATen copies, optimizer, ...)
and the kernels with the most time per step; writes the full table to --out.
A short unprofiled run comes first (--warmup-steps), so compilation and cuDNN's algorithm
search are outside the profiled window.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from alignlearn.trainer import train
from throughput import add_training_args, training_run

# First match wins: inductor's generated kernels, then kernel-name fragments of cuDNN, cuBLAS, ATen and the optimizers.
KINDS = [
    ("inductor reduction", ("triton_red", "triton_per")),
    ("inductor pointwise", ("triton_poi",)),
    ("optimizer", ("adam", "foreach", "lerp", "multi_tensor")),
    ("convolution", ("conv", "cudnn", "implicit_gemm", "xmma", "dgrad", "wgrad")),
    ("matrix product", ("gemm", "cutlass", "matmul", "flash", "attention", "fmha", "nvjet")),
    ("dropout (ATen)", ("dropout", "bernoulli")),
    ("copies (ATen)", ("copy", "memcpy", "transpose", "nchw", "nhwc", "cat")),
    ("normalisation (ATen)", ("norm", "welford", "reduce")),
    ("elementwise (ATen)", ("elementwise", "silu", "mul", "add", "vectorized")),
]


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other")


def kernel_times(prof, cuda: bool) -> dict[str, tuple[float, int]]:
    """{name: (self time in us, calls)} of device kernels (CUDA) or of CPU ops (CPU runs)."""
    out = {}
    for e in prof.key_averages():
        if cuda and e.device_type != torch.autograd.DeviceType.CUDA:
            continue  # a CPU op's device time repeats its kernels'
        t = e.self_device_time_total if cuda else e.self_cpu_time_total
        if t > 0:
            out[e.key] = (t, e.count)
    return out


def profiled_run(cfg, steps, data, activities, cuda):
    """(kernel times, wall seconds) of one train() of `steps` steps under the profiler."""
    run = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
    with tempfile.TemporaryDirectory() as tmp, profile(activities=activities) as prof:
        t0 = time.perf_counter()
        train(run, Path(tmp) / "run", show_progress=False, data=data)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    return kernel_times(prof, cuda), wall


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p, steps=10, log_every=10**9)  # one host sync, at the end
    p.add_argument("--warmup-steps", type=int, default=3,
                   help="an unprofiled run first, so compilation and cuDNN's algorithm search stay out of the window")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", default=None, help="write the full per-step kernel table here")
    a = p.parse_args(argv)

    cfg, train_set, test_set = training_run(a)
    data = (train_set, test_set)
    cuda = torch.cuda.is_available() and a.device in ("auto", "cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if a.warmup_steps > 0:  # same process: the compiled graphs and cuDNN's chosen algorithms are reused
        profiled_run(cfg, a.warmup_steps, data, [ProfilerActivity.CPU], False)
    # Two runs, of S and 2S steps: their difference is S steps alone, without the set-up, the final
    # checkpoint and the preview that each run does once.
    short, wall_short = profiled_run(cfg, a.steps, data, activities, cuda)
    long, wall_long = profiled_run(cfg, 2 * a.steps, data, activities, cuda)
    per_step = {k: ((t - short.get(k, (0, 0))[0]) / a.steps, (n - short.get(k, (0, 0))[1]) / a.steps)
                for k, (t, n) in long.items()}
    per_step = {k: v for k, v in per_step.items() if v[0] > 0}
    busy = sum(t for t, _ in per_step.values())
    wall = (wall_long - wall_short) / a.steps * 1e6
    by_kind: dict[str, float] = defaultdict(float)
    for k, (t, _) in per_step.items():
        by_kind[kind_of(k)] += t
    what = "device kernels" if cuda else "CPU ops (self time)"
    lines = [f"per step at batch {a.batch_size} (difference of {2 * a.steps}- and {a.steps}-step profiled runs): "
             f"wall {wall / 1e3:.1f} ms, {what} {busy / 1e3:.1f} ms" + (f", device idle {100 * max(0.0, 1 - busy / wall):.0f}%"
                                                                   if cuda else "")]
    lines += [f"  {kind:22s} {t / 1e3:7.2f} ms {100 * t / busy:5.1f}%" for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    rows = sorted(per_step.items(), key=lambda kv: -kv[1][0])
    table = [f"{'us/step':>9s} {'calls/step':>10s}  kernel"] + [f"{t:9.1f} {n:10.1f}  {k[:150]}" for k, (t, n) in rows]
    print("\n".join(lines + table[: a.top + 1]))
    if a.out:
        Path(a.out).write_text("\n".join(lines + table) + "\n")


if __name__ == "__main__":
    main()
