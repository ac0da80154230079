"""One training loop for every objective: ct-inversion, ct and edm.

Randomness of step k comes from a seed derived from (seed, rank, k), so a resumed
run replays exactly what an uninterrupted one would have drawn. The loop never
reads a device value except at logging and checkpoint boundaries.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .budget import TimeBudget
from .checkpoint import (
    CKPT_DIR,
    CONFIG,
    latest_checkpoint,
    load_tensors,
    load_weights,
    read_json,
    save_checkpoint,
    unflatten_optimizer,
    write_json_atomic,
)
from .config import RunConfig
from .distributed import DistInfo, any_rank, barrier, init_distributed, shutdown
from .ema import EMA
from .errors import UserError
from .models import build_model, load_teacher
from .networks.dropout import draw_step_seed, dropout_seeds, with_counter_dropout
from .networks.norm import resolve_group_norm, with_channel_stats_group_norms
from .objectives import build_objective
from .previews import preview

METRICS = "metrics.jsonl"


class TrainingStopped(Exception):
    """Training ended early but cleanly (Ctrl-C, or a non-finite loss); `checkpoint` is the last good one."""

    def __init__(self, message: str, checkpoint: Path | None, exit_code: int):
        super().__init__(message)
        self.checkpoint, self.exit_code = checkpoint, exit_code


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    loss: float
    img_per_s: float
    checkpoint: Path


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The run's metrics.jsonl, one dict per logging interval."""
    return [json.loads(line) for line in (Path(run_dir) / METRICS).read_text().splitlines()]


def steady_img_per_s(rows: list[dict], fallback: float) -> float:
    """Median img/s over the logging intervals after the first (which holds warm-up and compilation)."""
    rates = [r["img_per_s"] for r in rows[1:]]
    return statistics.median(rates) if rates else fallback


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def prepare_run_dir(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse to overwrite another run unless --force; refuse to resume what is not there."""
    has_run = (run_dir / CONFIG).is_file()
    if resume:
        if not run_dir.exists():
            raise UserError(f"cannot resume: {run_dir} does not exist")
        if not has_run:
            raise UserError(f"cannot resume: {run_dir} is not an alignlearn run folder (no {CONFIG})")
        return
    if has_run and not force:
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or --force to replace it")
    if run_dir.exists() and any(run_dir.iterdir()) and not has_run:
        raise UserError(f"{run_dir} is not empty and holds no alignlearn run; choose another --out")
    if has_run and force:
        for name in (CONFIG, METRICS):
            (run_dir / name).unlink(missing_ok=True)
        for name in (CKPT_DIR, "samples"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)


class _StopFlag:
    """Ctrl-C asks the loop to stop at the next step boundary; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


# Inductor settings of the trainer's compiled passes. fallback_random: inductor draws random numbers as
# eager PyTorch does; its own (Philox) dropout would give the compiled online pass another mask than the
# target pass replays from the same RNG state, breaking iCT's shared dropout mask. benchmarks/throughput.py
# varies these (--inductor KEY=VALUE) to measure alternatives.
INDUCTOR_OPTIONS: dict = {"fallback_random": True}

# --cuda-graphs. The compiled step is host-bound without them (the GPU idles between launches: session 5's
# profile). force_layout_optimization keeps channels-last buffers between the convolutions of the training
# graphs too, where inductor's heuristic turns that off (benchmarks/layout_decision.py) and cuDNN then converts
# layouts in 74 copies a step; it only pays once the launches are out of the way (RESULTS.md, 2026-11-27).
# The realize_* thresholds (4, 8 and 30 by inductor's default) decide when inductor stores an intermediate
# instead of recomputing it where it is read: raised, the backward recomputes each GroupNorm's normalised
# output in the kernels that read it instead of writing it in fp32 and reading it back, the same values
# (RESULTS.md, sessions 13 and 14: the emulated backward moves 40% fewer bytes; the H100 step 3% faster).
# unroll_reductions_threshold=1 keeps reductions over a few values (per-channel GroupNorm's combination of 2-8
# channel statistics into group statistics) as reductions: unrolled into pointwise code, the raised thresholds
# inline them into every element's kernel (161 SASS instructions an element in one backward kernel of PyTorch
# 2.14's code, emulated; on an H100 with 2.11 the step's issue floor fell from 8.42 to 7.98 ms. RESULTS.md,
# sessions 15 and 16).
CUDA_GRAPH_OPTIONS: dict = {"triton.cudagraphs": True, "force_layout_optimization": True,
                            "realize_reads_threshold": 64, "realize_acc_reads_threshold": 64,
                            "realize_opcount_threshold": 1000, "unroll_reductions_threshold": 1}


def training_inductor_options(cuda_graphs: bool = False) -> dict:
    """The inductor settings of the trainer's compiled passes, with or without --cuda-graphs."""
    return {**INDUCTOR_OPTIONS, **(CUDA_GRAPH_OPTIONS if cuda_graphs else {})}


def swap_training_modules(net: torch.nn.Module, group_norm: str, dropout_rng: str, cuda_graphs: bool) -> None:
    """The modules --group-norm and --dropout-rng choose, swapped in place (same parameters and state dict).
    Call it before copying the model (EMA): the copies then compute the same way, each with its own seed."""
    if resolve_group_norm(group_norm, cuda_graphs) == "per-channel":
        with_channel_stats_group_norms(net)
    if dropout_rng == "counter":
        with_counter_dropout(net)


def compile_for_training(net: torch.nn.Module, cuda_graphs: bool = False) -> torch.nn.Module:
    """torch.compile with the trainer's inductor settings, scoped to this module's graphs."""
    return torch.compile(net, options=training_inductor_options(cuda_graphs))


def _lr_at(step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


def _make_optimizer(cfg, params, on_gpu: bool = False):
    cls = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}[cfg.train.optimizer]
    # Adam's fused CUDA kernel: one launch for all parameters instead of a foreach chain per step.
    fused = {"fused": True} if cls is torch.optim.Adam and on_gpu else {}
    return cls(params, lr=cfg.train.lr, betas=(0.9, 0.999), **fused)


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    stop_after: int | None = None,
    show_progress: bool = True,
    data=None,
    teacher=None,
) -> TrainResult:
    """Train `cfg` into `run_dir`. `data` = (train, test) ImageData overrides cfg.data, `teacher` a
    callable D(x, t, labels) overrides cfg.objective.teacher (toy problems with analytic denoisers)."""
    run_dir = Path(run_dir)
    info = init_distributed(cfg.train.device)
    try:
        return _train(cfg, run_dir, info, resume, force, stop_after, show_progress, data, teacher)
    finally:
        shutdown(info)


def _train(cfg, run_dir, info: DistInfo, resume, force, stop_after, show_progress, data, teacher) -> TrainResult:
    from .data import load_data

    tc, device = cfg.train, info.device
    if info.is_main:
        prepare_run_dir(run_dir, resume=resume, force=force)
    barrier(info)
    if tc.batch_size % info.world_size:
        raise UserError(f"--batch-size {tc.batch_size} must be divisible by the {info.world_size} processes")
    if tc.cuda_graphs and device.type != "cuda":
        where = "; this run was started with it, so resume it on a GPU" if resume else ""
        raise UserError(f"--cuda-graphs needs a CUDA device, got {device.type}{where}")
    if tc.cuda_graphs and info.enabled:  # DDP's gradient hooks inside captured graphs: not tried yet
        raise UserError("--cuda-graphs runs on one GPU for now; drop it under torchrun")

    train_set, test_set = data if data is not None else load_data(cfg.data.name, cfg.data.data_dir, cfg.data.image_size)
    if len(train_set) == 0:
        raise UserError(f"dataset {cfg.data.name} has an empty training split")
    if cfg.objective.name == "cd-inversion" and teacher is None:
        if not cfg.objective.teacher:
            raise UserError("cd-inversion needs --teacher: a trained diffusion-model (edm) run")
        teacher = load_teacher(cfg.objective.teacher, cfg, device)
    objective = build_objective(cfg.objective, tc.steps, int(np.prod(train_set.shape)), teacher=teacher)
    # The config marks the folder as a run: written only once everything that can refuse the settings has accepted them.
    if info.is_main and not resume:
        write_json_atomic(run_dir / CONFIG, cfg.to_dict())

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    raw = build_model(cfg.model).to(device)
    on_gpu = device.type == "cuda"
    if on_gpu:  # every step has the same shapes: let cuDNN time its convolution algorithms once (as EDM's loop does)
        torch.backends.cudnn.benchmark = True
    image_like = len(train_set.shape) == 3
    channels_last = tc.channels_last and on_gpu and image_like
    swap_training_modules(raw, tc.group_norm, tc.dropout_rng, tc.cuda_graphs)  # before the EMA copies
    if channels_last:  # before the EMA copies, so the target pass and the EMA lerp see the same layout
        raw.to(memory_format=torch.channels_last)
    ema = EMA(raw, tc.ema_decay)
    target_ema = EMA(raw, cfg.objective.target_ema, warmup=False) if cfg.objective.target == "ema" else None
    params = list(raw.parameters())  # gathered once: the module walk is host time in every step
    optimizer = _make_optimizer(cfg, params, on_gpu)
    start, budget_spent = 0, 0.0
    if resume:
        start, budget_spent = _load_state(run_dir, raw, ema, target_ema, optimizer)
    clock = TimeBudget(tc.time_budget_s, tc.steps, budget_spent)
    if target_ema is not None:
        target_ema.module.train()  # dropout as in the online pass, with the same mask

    # counter-based dropout: the online and target passes read the same per-step seed, drawn on the device
    seeds = dropout_seeds(raw) + (dropout_seeds(target_ema.module) if target_ema is not None else [])

    net = DistributedDataParallel(raw, device_ids=[device.index] if on_gpu else None) if info.enabled else raw
    target_net = target_ema if target_ema is not None else net
    if tc.compile:
        net = compile_for_training(net, tc.cuda_graphs)
        target_net = compile_for_training(target_net, tc.cuda_graphs) if target_ema is not None else net
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (tc.bf16 and on_gpu) else nullcontext()

    x_all = train_set.images[info.rank :: info.world_size].to(device)
    y_all = train_set.labels[info.rank :: info.world_size].to(device)
    if channels_last:
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    local_batch = tc.batch_size // info.world_size
    null_label = cfg.model.backbone.get("num_classes", 0)
    preview_x = test_set.images[:16] if len(test_set) else train_set.images[:16]
    preview_y = (test_set.labels[:16] if len(test_set) else train_set.labels[:16]) if tc.class_cond else None
    end = tc.steps if stop_after is None else min(stop_after, tc.steps)

    loss_sum = torch.zeros((), device=device)
    n_acc, last_loss, img_s = 0, float("nan"), 0.0
    last_ckpt = latest_checkpoint(run_dir) if resume else None
    t_mark, step_mark = time.perf_counter(), start
    metrics = open(run_dir / METRICS, "a") if info.is_main else None
    progress = _Progress(show_progress and info.is_main, None if clock.enabled else end, start)

    def save(step):
        nonlocal last_ckpt
        if info.is_main:
            last_ckpt = save_checkpoint(
                run_dir, step, model=raw, ema=ema, target=target_ema, optimizer=optimizer,
                state={"loss": last_loss, "version": cfg.version, "time": time.time(), "budget_spent": clock.spent()},
            )
            preview(ema.module.eval(), preview_x, preview_y, run_dir / "samples" / f"step_{step:08d}.png")
        barrier(info)

    def flush(step):
        """The one host sync: mean loss since the last flush, throughput, a metrics line."""
        nonlocal loss_sum, n_acc, last_loss, t_mark, step_mark, img_s
        if n_acc == 0:
            return
        mean = loss_sum / n_acc
        if info.enabled:
            torch.distributed.all_reduce(mean, op=torch.distributed.ReduceOp.AVG)
        last_loss = mean.item()
        now = time.perf_counter()
        img_s = tc.batch_size * (step - step_mark) / max(now - t_mark, 1e-9)
        if not math.isfinite(last_loss):
            where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else "; no checkpoint was written"
            raise TrainingStopped(f"loss became {last_loss} before step {step}{where} (try a lower --lr)", last_ckpt, 3)
        if metrics is not None:
            row = {"step": step, "loss": last_loss, "lr": optimizer.param_groups[0]["lr"], "img_per_s": img_s,
                   "N": objective.num_steps(k_curriculum), "time": time.time()}
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
        progress.update(loss=last_loss, img_s=img_s)
        loss_sum, n_acc, t_mark, step_mark = torch.zeros((), device=device), 0, now, step

    step, k_curriculum = start, start
    try:
        with _StopFlag() as stop, progress:
            net.train()
            while step < end:
                if tc.compile:
                    # One CUDA-graph generation per step. Otherwise inductor's cudagraph trees start a new one
                    # at the online pass (a new compiled call with no backward pending) and free the target
                    # pass's output before the loss reads it. A counter increment when graphs are off.
                    torch.compiler.cudagraph_mark_step_begin()
                torch.manual_seed(step_seed(tc.seed, info.rank, step))
                idx = torch.randint(len(x_all), (local_batch,), device=device)
                x0 = x_all[idx]
                labels = None
                if tc.class_cond:
                    drop = torch.rand(local_batch, device=device) < tc.cond_drop
                    labels = torch.where(drop, null_label, y_all[idx])
                draw_step_seed(seeds)
                for g in optimizer.param_groups:
                    g["lr"] = _lr_at(step, tc.lr, tc.warmup)
                k_curriculum = clock.curriculum_step(step)
                with autocast:
                    loss = objective(net, target_net, x0, labels, k_curriculum).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                optimizer.step()
                ema.update(raw, step)
                if target_ema is not None:
                    target_ema.update(raw, step)
                loss_sum += loss.detach()
                n_acc += 1
                step += 1
                clock.start()
                progress.advance()
                # The budget is checked every step alone, at log boundaries under torchrun (one all-reduce).
                if clock.enabled and (step % tc.log_every == 0 or not info.enabled) and any_rank(clock.done(), info):
                    end = step  # the budget is spent: this step is the last
                at_log = step % tc.log_every == 0 or step == end
                if at_log or step % tc.ckpt_every == 0:
                    flush(step)
                if step % tc.ckpt_every == 0 and step < end:
                    save(step)
                if (at_log and any_rank(stop.set, info)) or (not info.enabled and stop.set):
                    flush(step)
                    save(step)
                    raise TrainingStopped(f"interrupted at step {step}; checkpoint saved to {last_ckpt}; continue with --resume", last_ckpt, 130)
                if step % tc.sample_every == 0 and step < end and info.is_main:
                    preview(ema.module.eval(), preview_x, preview_y, run_dir / "samples" / f"step_{step:08d}.png")
            flush(step)
            if last_ckpt is None or last_ckpt.name != f"step_{step:08d}":
                save(step)
    finally:
        if metrics is not None:
            metrics.close()
    return TrainResult(run_dir, step, last_loss, img_s, last_ckpt)


def _load_state(run_dir: Path, raw, ema, target_ema, optimizer) -> tuple[int, float]:
    """(step, seconds of --time-budget spent) of the latest checkpoint, its weights and optimizer state loaded."""
    ckpt = latest_checkpoint(run_dir)
    state = read_json(ckpt / "state.json")
    load_weights(raw, ckpt / "model.safetensors")
    load_weights(ema.module, ckpt / "ema.safetensors")
    if target_ema is not None:
        load_weights(target_ema.module, ckpt / "target.safetensors")
    try:
        optimizer.load_state_dict(unflatten_optimizer(load_tensors(ckpt / "optimizer.safetensors"), state["optimizer"]))
        return int(state["step"]), float(state.get("budget_spent", 0.0))
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"checkpoint {ckpt} is corrupt: {e}") from None


class _Progress:
    """A rich progress bar with loss and img/s (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled = enabled
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4g}  {task.fields[img_s]:.0f} img/s"),
                TimeElapsedColumn(), TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("train", total=total, completed=start, loss=float("nan"), img_s=0.0)

    def __enter__(self):
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)

    def advance(self):
        if self.enabled:
            self.bar.advance(self.task)

    def update(self, **fields):
        if self.enabled:
            self.bar.update(self.task, **fields)
