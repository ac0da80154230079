"""Where one training step's device time goes: torch.profiler over a short `alignlearn train` run.

    python benchmarks/profile_step.py --data mnist-5k --preset mnist --batch-size 512 --steps 30 --device cuda

Prints the kernels with the most self time and a split by kind (convolution, matrix product,
normalisation, elementwise, copies, optimizer), and writes the full table to --out.
A short unprofiled run comes first (--warmup-steps), so compilation and cuDNN's algorithm
search are outside the profiled window.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from alignlearn.trainer import train
from throughput import add_training_args, training_run

# First match wins: kernel-name fragments of cuDNN, cuBLAS, inductor/ATen and the fused optimizers.
KINDS = [
    ("optimizer", ("adam", "foreach", "lerp", "multi_tensor")),
    ("convolution", ("conv", "cudnn", "implicit_gemm", "xmma_fprop", "dgrad", "wgrad", "sm90_xmma")),
    ("matrix product", ("gemm", "cutlass", "matmul", "flash", "attention", "fmha")),
    ("normalisation", ("norm", "welford", "reduce")),
    ("copies / layout", ("copy", "transpose", "nchw", "nhwc", "cat")),
    ("elementwise", ("elementwise", "triton", "silu", "mul", "add", "vectorized")),
]


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p, steps=20, log_every=10**9)  # one host sync, at the end
    p.add_argument("--warmup-steps", type=int, default=3,
                   help="an unprofiled run first, so compilation and cuDNN's algorithm search stay out of the window")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", default=None, help="write the full kernel table here")
    a = p.parse_args(argv)

    cfg, train_set, test_set = training_run(a)
    cuda = torch.cuda.is_available() and a.device in ("auto", "cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if a.warmup_steps > 0:  # same process: the compiled graphs and cuDNN's chosen algorithms are reused
        warm = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=a.warmup_steps))
        with tempfile.TemporaryDirectory() as tmp:
            train(warm, Path(tmp) / "run", show_progress=False, data=(train_set, test_set))
    with tempfile.TemporaryDirectory() as tmp, profile(activities=activities) as prof:
        result = train(cfg, Path(tmp) / "run", show_progress=False, data=(train_set, test_set))
    if cuda:
        torch.cuda.synchronize()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events) or 1
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[kind_of(e.key)] += getattr(e, attr)
    print(f"{result.step} steps at batch {a.batch_size}: {total / 1e3 / result.step:.1f} ms of {'device' if cuda else 'CPU'} "
          f"self time per step ({result.img_per_s:.0f} img/s over the profiled run)")
    for kind, us in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:16s} {100 * us / total:5.1f}%")
    table = prof.key_averages().table(sort_by=attr, row_limit=a.top, max_name_column_width=70)
    print(table)
    if a.out:
        Path(a.out).write_text(prof.key_averages().table(sort_by=attr, row_limit=200, max_name_column_width=120))


if __name__ == "__main__":
    main()
