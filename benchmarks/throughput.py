"""Training throughput of the alignment-learning trainer, with FLOPs and the fraction of peak.

    python benchmarks/throughput.py --data digits --preset tiny --batch-size 128 --steps 300
    python benchmarks/throughput.py --data mnist-5k --preset mnist --batch-size 512 --compile --peak-tflops 989

Runs `alignlearn train` in-process for --steps, takes the median img/s of the
logging intervals after the first (warm-up, compilation), counts one training
step's FLOPs with torch.utils.flop_counter, and appends a record to results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import torch

from alignlearn.config import TrainConfig, make_run_config
from alignlearn.data import load_data
from alignlearn.models import build_model
from alignlearn.objectives import ObjectiveConfig, build_objective
from alignlearn.results import record_row
from alignlearn.timing import device_name
from alignlearn.networks.dropout import DROPOUT_RNGS
from alignlearn.networks.norm import resolve_group_norm
from alignlearn.compile_options import CUDA_GRAPH_OPTIONS, INDUCTOR_OPTIONS
from alignlearn.trainer import read_metrics, steady_img_per_s, train


def step_flops(cfg, shape, device) -> int:
    """FLOPs of one training step (both forward passes and the backward) at the configured batch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg.model).to(device)
    obj = build_objective(cfg.objective, cfg.train.steps, int(torch.tensor(shape).prod()), noise=cfg.model)
    x0 = torch.rand(cfg.train.batch_size, *shape, device=device) * 2 - 1
    labels = torch.zeros(cfg.train.batch_size, dtype=torch.long, device=device) if cfg.train.class_cond else None
    with FlopCounterMode(display=False) as fc:
        obj(model, model, x0, labels, cfg.train.steps // 2).mean().backward()
    return fc.get_total_flops()


def cudagraph_skips() -> int:
    """How many times inductor has run a compiled graph without the CUDA graphs asked for, in this process
    (its own counter: on the CPU every such graph, on a GPU a graph with a CPU input, a mutation, ...)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


def add_training_args(p: argparse.ArgumentParser, steps: int, log_every: int) -> None:
    """The options that pick what one benchmark training run trains (shared with profile_step.py)."""
    p.add_argument("--objective", default="ct-inversion")
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--log-every", type=int, default=log_every)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cuda-graphs", action="store_true", help="the trainer's --cuda-graphs (with --compile, one GPU)")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--no-channels-last", action="store_true", help="keep images and weights NCHW on the GPU")
    p.add_argument("--group-norm", default="auto", help="auto | native | per-channel (alignlearn/networks/norm.py)")
    p.add_argument("--dropout-rng", choices=DROPOUT_RNGS, default="replay", help="alignlearn/networks/dropout.py")
    add_inductor_option(p)


def add_inductor_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                   help="an inductor setting for the compiled passes, on top of the trainer's (repeatable)")


def inductor_options(pairs: list[str]) -> dict:
    """KEY=VALUE strings as inductor settings: true/false as booleans, numbers as numbers."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--inductor wants KEY=VALUE, got {pair!r}")
        low = value.lower()
        out[key] = low == "true" if low in ("true", "false") else int(value) if value.lstrip("-").isdigit() else value
    return out


def apply_inductor_options(pairs: list[str]) -> None:
    """Add --inductor's settings to the trainer's, for every pass this process compiles from now on; they
    also win over --cuda-graphs' own (e.g. inductor's default thresholds back, to time them under graphs)."""
    options = inductor_options(pairs)
    INDUCTOR_OPTIONS.update(options)
    CUDA_GRAPH_OPTIONS.update({k: v for k, v in options.items() if k in CUDA_GRAPH_OPTIONS})


def variant(a: argparse.Namespace, dev: str) -> str:
    """The precision column: what this run changed from the trainer's defaults."""
    base = ("bf16" if dev != "cpu" and not a.no_bf16 else "fp32") + (" + compile" if a.compile else "") + (
        " + CUDA graphs" if a.cuda_graphs else "")
    extras = (["NCHW"] if a.no_channels_last and dev != "cpu" else []) + (
        [f"{gn} GroupNorm"] if (gn := resolve_group_norm(a.group_norm, a.cuda_graphs)) != "native" else []) + (
        [f"{a.dropout_rng} dropout"] if a.dropout_rng != "replay" else []) + a.inductor
    return ", ".join([base] + extras)


def training_run(a: argparse.Namespace):
    """(run config, train split, test split) for those options: no checkpoints or previews in the timed loop."""
    apply_inductor_options(a.inductor)
    train_set, test_set = load_data(a.data, a.data_dir)
    tc = TrainConfig(steps=a.steps, batch_size=a.batch_size, device=a.device, compile=a.compile, bf16=not a.no_bf16,
                     cuda_graphs=a.cuda_graphs, channels_last=not a.no_channels_last, group_norm=a.group_norm, dropout_rng=a.dropout_rng, log_every=a.log_every,
                     ckpt_every=10**9, sample_every=10**9)
    cfg = make_run_config(ObjectiveConfig(a.objective), tc, data_name=a.data, shape=train_set.shape,
                          num_classes=train_set.num_classes, preset=a.preset)
    return cfg, train_set, test_set


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p, steps=300, log_every=25)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for the fraction column")
    p.add_argument("--results", default="results", help="folder of the result records (results/*.jsonl)")
    p.add_argument("--json", default=None, help="also write img/s, TFLOP/s and FLOPs per step to this file")
    p.add_argument("--command", default=None, help="the command line to record (default: this one)")
    a = p.parse_args(argv)

    cfg, train_set, test_set = training_run(a)
    skips = cudagraph_skips()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, Path(tmp) / "run", show_progress=False, data=(train_set, test_set))
        rows = read_metrics(Path(tmp) / "run")
    img_s = steady_img_per_s(rows, result.img_per_s)
    skips = cudagraph_skips() - skips
    dev = "cuda" if (a.device == "auto" and torch.cuda.is_available()) else a.device
    dev = "cpu" if dev == "auto" else dev
    flops = step_flops(cfg, train_set.shape, dev)
    tflops = flops / a.batch_size * img_s / 1e12
    frac = f"{100 * tflops / a.peak_tflops:.1f}%" if a.peak_tflops else "n/a"
    params = sum(p.numel() for p in build_model(cfg.model).parameters())
    cmd = a.command or "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
    header = ["date", "device", "objective", "data", "preset (params)", "batch", "precision", "img/s (median)",
              "TFLOP/s", "of bf16 peak", "command"]
    cells = [str(dt.date.today()), device_name(dev), a.objective, a.data, f"{a.preset} ({params / 1e6:.2f}M)",
             str(a.batch_size), variant(a, dev),
             f"{img_s:,.0f}", f"{tflops:.3g}", frac, f"`{cmd}`"]
    print(record_row(a.results, "training_throughput", header, cells))
    if a.json:
        Path(a.json).write_text(json.dumps({"img_per_s": img_s, "tflops": tflops, "step_flops": flops, "batch_size": a.batch_size,
                                            "compile": a.compile, "device": device_name(dev), "variant": variant(a, dev),
                                            # graphs inductor ran without the CUDA graphs asked for (then the row is not CG's)
                                            "cudagraph_skips": skips,
                                            "first_interval_s": a.batch_size * rows[0]["step"] / rows[0]["img_per_s"],
                                            "steady_interval_s": a.batch_size * rows[0]["step"] / img_s,
                                            # what the run held on the GPU: how many such runs fit on it at once
                                            "max_memory_reserved_gb": torch.cuda.max_memory_reserved() / 1e9
                                            if dev == "cuda" else None}) + "\n")


if __name__ == "__main__":
    main()
