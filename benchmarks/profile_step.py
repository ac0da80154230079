"""Where one training step's device time goes: torch.profiler over a short `alignlearn train` run.

    python benchmarks/profile_step.py --data mnist-5k --preset mnist --batch-size 512 --steps 10 --device cuda --compile

Prints the device time per step, how much of the step the device sits idle (host-bound steps; the
wall time is taken under the profiler, whose shape recording adds host time, so the idle share is an
upper bound: compare with throughput.py's unprofiled img/s),
a split by kind (inductor's kernels, convolution, matrix product, ATen copies, optimizer, ...),
the kernels with the most time per step, and where the kernels outside inductor's and cuDNN's
come from (the op that launched each, its parents, input shapes and strides); writes the full tables to --out.
A short unprofiled run comes first (--warmup-steps), so compilation and cuDNN's algorithm
search are outside the profiled window.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from alignlearn.trainer import read_metrics, train
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


# Kinds whose kernels are traced to the ops that launched them: the work that neither inductor nor cuDNN does.
UNFUSED = ("copies (ATen)", "dropout (ATen)", "normalisation (ATen)", "elementwise (ATen)", "other")


def _ancestry(e, depth: int) -> list[str]:
    """The names of `e` and its parents, innermost first."""
    names = []
    while e is not None and len(names) < depth:
        names.append(e.name)
        e = e.cpu_parent
    return names


def input_strides(prof) -> dict[int, list]:
    """{op id: its inputs' strides}, from the profiler's Chrome trace ("Input Strides", recorded with
    record_shapes), whose "External id" is the op's id: torch 2.11's events carry shapes, not strides."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text()).get("traceEvents", [])
    return {e["args"]["External id"]: e["args"]["Input Strides"] for e in events
            if e.get("cat") == "cpu_op" and "External id" in e.get("args", {}) and "Input Strides" in e["args"]}


def launch_sites(prof, cuda: bool, depth: int = 3, strides: dict | None = None) -> dict[str, tuple[float, int]]:
    """{'kernel <- op [input shapes] strides [...] <- parent <- ...': (us, calls)} for the kernels of UNFUSED kinds.

    A kernel is attributed to the innermost op that launched it (on the CPU the op is the kernel),
    shown with its first two input shapes (the profiler's record_shapes), their strides where
    `strides` ({op id: strides}) has them (a copy's say which layout it converts), and `depth` parents.
    """
    out: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CPU:
            continue
        launched = [(k.name, k.duration) for k in e.kernels] if cuda else [(e.name, e.self_cpu_time_total)]
        for name, us in launched:
            if us <= 0 or kind_of(name) not in UNFUSED:
                continue
            shapes = [list(s) for s in (e.input_shapes or []) if s][:2]
            op = f"{e.name} {shapes}" if shapes else e.name
            st = [s for s in (strides or {}).get(e.id, []) if s][:2]
            op += f" strides {st}" if st else ""
            site = " <- ".join(([name[:80]] if cuda else []) + [op] + _ancestry(e.cpu_parent, depth))
            out[site][0] += us
            out[site][1] += 1
    return {k: (t, n) for k, (t, n) in out.items()}


def per_step_difference(long: dict, short: dict, steps: int) -> dict[str, tuple[float, float]]:
    """(time, calls) per step of the `steps` steps by which the long run exceeds the short one."""
    diff = {k: ((t - short.get(k, (0, 0))[0]) / steps, (n - short.get(k, (0, 0))[1]) / steps) for k, (t, n) in long.items()}
    return {k: v for k, v in diff.items() if v[0] > 0}


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


def timed_run(cfg, steps, data) -> float:
    """Seconds per step of one train() of `steps` steps, timed by the trainer on the run's second half
    alone, without its set-up (a difference of two whole runs is at the mercy of host noise)."""
    train_cfg = dataclasses.replace(cfg.train, steps=steps, log_every=max(1, steps // 2))
    with tempfile.TemporaryDirectory() as tmp:
        train(dataclasses.replace(cfg, train=train_cfg), Path(tmp) / "run", show_progress=False, data=data)
        return cfg.train.batch_size / read_metrics(Path(tmp) / "run")[-1]["img_per_s"]


def profiled_run(cfg, steps, data, activities, cuda):
    """(kernel times, launch sites, seconds per step) of timed_run under the profiler."""
    with profile(activities=activities, record_shapes=True) as prof:
        step_s = timed_run(cfg, steps, data)
        if cuda:
            torch.cuda.synchronize()
    return kernel_times(prof, cuda), launch_sites(prof, cuda, strides=input_strides(prof)), step_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p, steps=10, log_every=10**9)  # profiled_run sets its own: one host sync mid-run, one at the end
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
        timed_run(cfg, a.warmup_steps, data)
    # Two runs, of S and 2S steps: their difference is S steps alone, without the set-up, the final
    # checkpoint and the preview that each run does once.
    short, short_sites, _ = profiled_run(cfg, a.steps, data, activities, cuda)
    long, long_sites, step_s = profiled_run(cfg, 2 * a.steps, data, activities, cuda)
    per_step = per_step_difference(long, short, a.steps)
    sites = per_step_difference(long_sites, short_sites, a.steps)
    busy = sum(t for t, _ in per_step.values())
    wall = step_s * 1e6
    by_kind: dict[str, float] = defaultdict(float)
    for k, (t, _) in per_step.items():
        by_kind[kind_of(k)] += t
    what = "device kernels" if cuda else "CPU ops (self time)"
    idle = f", device idle {100 * max(0.0, 1 - busy / wall):.0f}%" if cuda else ""
    lines = [f"per step at batch {a.batch_size} (kernels: difference of {2 * a.steps}- and {a.steps}-step profiled runs; "
             f"wall: the last {a.steps} steps, under the profiler): wall {wall / 1e3:.1f} ms, {what} {busy / 1e3:.1f} ms{idle}"]
    lines += [f"  {kind:22s} {t / 1e3:7.2f} ms {100 * t / busy:5.1f}%" for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    rows = sorted(per_step.items(), key=lambda kv: -kv[1][0])
    table = [f"{'us/step':>9s} {'calls/step':>10s}  kernel"] + [f"{t:9.1f} {n:10.1f}  {k[:150]}" for k, (t, n) in rows]
    origin = [f"launch sites of the kernels neither inductor nor cuDNN wrote ({', '.join(UNFUSED)}):",
              f"{'us/step':>9s} {'calls/step':>10s}  kernel <- op [input shapes] strides [their strides] <- parents"]
    origin += [f"{t:9.1f} {n:10.1f}  {k[:300]}" for k, (t, n) in sorted(sites.items(), key=lambda kv: -kv[1][0])]
    print("\n".join(lines + table[: a.top + 1] + origin[: a.top + 2]))
    if a.out:
        Path(a.out).write_text("\n".join(lines + table + origin) + "\n")


if __name__ == "__main__":
    main()
