"""Which lines of the training loop make the host wait for the GPU.

    python benchmarks/host_syncs.py --data mnist-5k --preset mnist --batch-size 512 --device cuda --compile

A step that syncs drains the GPU's queue: the host then prepares the next step while the GPU
idles, and step time becomes host time plus device time instead of the larger of the two.
Session 5 found the compiled step host-bound (the GPU busy at most 53 of 78-88 ms), which a
sync per step would explain as well as slow launches would. This runs the trainer under
`torch.cuda.set_sync_debug_mode("warn")` for --steps and for twice as many, after an
unrecorded warm-up run (compilation, cuDNN's algorithm search), each with one logging
interval, and attributes every synchronising call to the innermost frame of this project and
the innermost frame overall. A site whose count grows with the steps syncs during the steps;
the others run once (set-up, the loss read, the checkpoint). The curriculum is held at a long
run's length, so N(k) stays put as it does between its few changes in real training (a 4-step
run of the default would change it every step). Needs CUDA.
"""

from __future__ import annotations

import argparse
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch

from alignlearn.trainer import train
from throughput import add_training_args, training_run

ROOT = Path(__file__).resolve().parents[1]
SYNC_MESSAGE = "called a synchronizing CUDA operation"


def site(stack: list[traceback.FrameSummary], root: Path = ROOT) -> str:
    """'ours.py:LINE code  <-  library.py:LINE' for the innermost frame under `root` and the innermost overall."""
    while len(stack) > 1 and Path(stack[-1].filename).name == "warnings.py":  # the warning's own delivery
        stack = stack[:-1]
    inner = stack[-1]
    mine = next((f for f in reversed(stack) if Path(f.filename).resolve().is_relative_to(root)), None)
    where = lambda f: f"{Path(f.filename).name}:{f.lineno}"  # noqa: E731
    if mine is None:
        return where(inner)
    text = f"{Path(mine.filename).resolve().relative_to(root)}:{mine.lineno} {mine.line or ''}".strip()
    return text if mine is inner else f"{text}  <-  {where(inner)}"


def record_syncs(fn, root: Path = ROOT) -> Counter:
    """Run fn() with CUDA's sync debug mode on; count the synchronising calls by site."""
    sites: Counter = Counter()

    def show(message, category, filename, lineno, file=None, line=None):
        if SYNC_MESSAGE in str(message):
            sites[site(traceback.extract_stack()[:-1], root)] += 1

    with warnings.catch_warnings():  # restores showwarning on exit
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sites


def per_step_sites(short: Counter, long: Counter) -> list[str]:
    """Sites called more often in the longer run: they sync during the steps; the others run once."""
    return sorted(s for s in set(short) | set(long) if long[s] > short[s])


def table(short: Counter, long: Counter, n: int) -> str:
    steps = set(per_step_sites(short, long))
    lines = [f"{'syncs, ' + str(n) + ' steps':>16s} {'syncs, ' + str(2 * n) + ' steps':>16s}  when      site"]
    for s in sorted(set(short) | set(long), key=lambda s: (-long[s], s)):
        lines.append(f"{short[s]:16d} {long[s]:16d}  {'per step' if s in steps else 'once    ':9s} {s}")
    lines.append(f"{len(steps)} site(s) sync during the steps" + (": the host waits for the GPU in every step that calls them"
                                                               if steps else "; the loop never waits for the GPU between its ends"))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p, steps=4, log_every=4)
    p.add_argument("--out", default=None, help="also write the table to this file")
    a = p.parse_args(argv)
    if not torch.cuda.is_available() or a.device == "cpu":
        raise SystemExit("host_syncs.py needs CUDA: sync debug mode is a CUDA feature")
    n = a.steps

    def run(steps: int, tmp: str, name: str):
        cfg, train_set, test_set = training_run(argparse.Namespace(**{**vars(a), "steps": steps, "log_every": steps}))
        cfg.objective.curriculum_steps = 10**6
        return lambda: train(cfg, Path(tmp) / name, show_progress=False, data=(train_set, test_set))

    with tempfile.TemporaryDirectory() as tmp:
        run(3, tmp, "warm")()
        short = record_syncs(run(n, tmp, "short"))
        long = record_syncs(run(2 * n, tmp, "long"))
    text = table(short, long, n)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
