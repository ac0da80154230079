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
    remove_stale_temporaries,
    unflatten_optimizer,
    write_json_atomic,
    write_text_atomic,
)
from .config import RunConfig
from .distributed import DistInfo, any_rank, barrier, init_distributed, shutdown
from .ema import EMA
from .errors import UserError
from .models import build_model, init_from_diffusion, load_teacher
from .compile_options import compile_for_training, swap_training_modules
from .networks.dropout import draw_step_seed, dropout_seeds
from .objectives import build_objective
from .previews import preview
from .runlock import LOCK, RunLock
from .tracking import make_tracker

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


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop the metrics rows logged after checkpoint `step`: a resumed run logs those steps again."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def steady_img_per_s(rows: list[dict], fallback: float) -> float:
    """Median img/s over the logging intervals after the first (which holds warm-up and compilation)."""
    rates = [r["img_per_s"] for r in rows[1:]]
    return statistics.median(rates) if rates else fallback


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def check_run_dir(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse to overwrite another run unless --force; refuse to resume what is not there. Writes nothing."""
    has_run = (run_dir / CONFIG).is_file()
    if resume:
        if not run_dir.exists():
            raise UserError(f"cannot resume: {run_dir} does not exist")
        if not has_run:
            raise UserError(f"cannot resume: {run_dir} is not an alignlearn run folder (no {CONFIG})")
        return
    if has_run and not force:
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or --force to replace it")
    if has_run:  # --force replaces only what alignlearn wrote: the config must be an alignlearn run's
        try:
            RunConfig.from_dict(read_json(run_dir / CONFIG))
        except UserError:
            raise UserError(f"{run_dir / CONFIG} is not an alignlearn run's; --force replaces only alignlearn runs, "
                            "so nothing was removed") from None
    if run_dir.exists() and any(p.name != LOCK for p in run_dir.iterdir()) and not has_run:
        raise UserError(f"{run_dir} is not empty and holds no alignlearn run; choose another --out")


def claim_run_dir(run_dir: Path, lock: RunLock, *, resume: bool, force: bool) -> None:
    """Take the folder's lock, then (--force) clear the run it holds and drop half-written checkpoints."""
    lock.acquire(run_dir)
    if force and not resume and (run_dir / CONFIG).is_file():
        for name in (CONFIG, METRICS):
            (run_dir / name).unlink(missing_ok=True)
        for name in (CKPT_DIR, "samples", "tensorboard"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    remove_stale_temporaries(run_dir)


STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # exit codes as a shell reports a death by the signal


class _StopFlag:
    """SIGINT (Ctrl-C) or SIGTERM (timeout, Slurm, Kubernetes) asks the loop to stop at the next step boundary,
    save and exit; signals after the first change nothing, so a save under way always completes."""

    def __init__(self):
        self.set, self.exit_code, self._old = False, 130, {}

    def __enter__(self):
        for sig in STOP_SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum, frame):
        if not self.set:
            self.set, self.exit_code = True, STOP_SIGNALS[signal.Signals(signum)]

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


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
    lock = RunLock()
    try:
        return _train(cfg, run_dir, info, resume, force, stop_after, show_progress, data, teacher, lock)
    finally:
        lock.release()
        shutdown(info)


@dataclass
class _Setup:
    """What the loop works with: models, optimizer, objective, data on the device, and the clock."""

    cfg: RunConfig
    run_dir: Path
    info: DistInfo
    objective: object
    raw: torch.nn.Module
    ema: EMA
    target_ema: EMA | None
    optimizer: torch.optim.Optimizer
    params: list
    net: torch.nn.Module
    target_net: torch.nn.Module
    autocast: object
    dropout_seeds: list
    x_all: torch.Tensor
    y_all: torch.Tensor
    preview_x: torch.Tensor
    preview_y: torch.Tensor | None
    clock: TimeBudget
    start: int


def _setup(cfg, run_dir, info: DistInfo, resume, force, data, teacher, lock: RunLock) -> _Setup:
    """Check the settings, claim the run folder, build (or restore) models and optimizer, place the data.
    Everything that can refuse the settings runs before the folder is touched."""
    from .data import load_data

    tc, device = cfg.train, info.device
    if info.is_main:
        check_run_dir(run_dir, resume=resume, force=force)
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
    objective = build_objective(cfg.objective, tc.steps, int(np.prod(train_set.shape)), teacher=teacher, noise=cfg.model)
    # The config marks the folder as a run: written only once everything that can refuse the settings has accepted them.
    if info.is_main:
        claim_run_dir(run_dir, lock, resume=resume, force=force)
        if not resume:
            write_json_atomic(run_dir / CONFIG, cfg.to_dict())
    barrier(info)

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    raw = build_model(cfg.model)
    if tc.init_from and not resume:
        init_from_diffusion(raw, tc.init_from)
    raw = raw.to(device)
    on_gpu = device.type == "cuda"
    if on_gpu:  # every step has the same shapes: let cuDNN time its convolution algorithms once (as EDM's loop does)
        torch.backends.cudnn.benchmark = True
    channels_last = tc.channels_last and on_gpu and len(train_set.shape) == 3
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
    shown = test_set if len(test_set) else train_set
    return _Setup(cfg, run_dir, info, objective, raw, ema, target_ema, optimizer, params, net, target_net, autocast,
                  seeds, x_all, y_all, shown.images[:16], shown.labels[:16] if tc.class_cond else None,
                  TimeBudget(tc.time_budget_s, tc.steps, budget_spent), start)


def _train_step(s: _Setup, step: int, k_curriculum: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step of the objective at curriculum step k; returns the (device) mean loss and the
    gradient norm before clipping."""
    tc, device = s.cfg.train, s.info.device
    if tc.compile:
        # One CUDA-graph generation per step. Otherwise inductor's cudagraph trees start a new one at the
        # online pass (a new compiled call with no backward pending) and free the target pass's output
        # before the loss reads it. A counter increment when graphs are off.
        torch.compiler.cudagraph_mark_step_begin()
    torch.manual_seed(step_seed(tc.seed, s.info.rank, step))
    local_batch = tc.batch_size // s.info.world_size
    idx = torch.randint(len(s.x_all), (local_batch,), device=device)
    x0 = s.x_all[idx]
    labels = None
    if tc.class_cond:
        drop = torch.rand(local_batch, device=device) < tc.cond_drop
        labels = torch.where(drop, s.cfg.model.backbone.get("num_classes", 0), s.y_all[idx])  # the null label
    draw_step_seed(s.dropout_seeds)
    for g in s.optimizer.param_groups:
        g["lr"] = _lr_at(step, tc.lr, tc.warmup)
    with s.autocast:
        loss = s.objective(s.net, s.target_net, x0, labels, k_curriculum).mean()
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # max_norm inf clips nothing (the scale factor is clamped to 1): the norm is measured either way
    grad_norm = torch.nn.utils.clip_grad_norm_(s.params, tc.grad_clip if tc.grad_clip > 0 else float("inf"))
    s.optimizer.step()
    s.ema.update(s.raw, step)
    if s.target_ema is not None:
        s.target_ema.update(s.raw, step)
    return loss.detach(), grad_norm.detach()


class _Bookkeeping:
    """The periodic work: the running loss, metrics lines (the loop's one host sync), checkpoints, previews."""

    def __init__(self, s: _Setup, resume: bool, progress: "_Progress"):
        self.s, self.progress = s, progress
        self.loss_sum = torch.zeros((), device=s.info.device)
        self.norm_sum = torch.zeros((), device=s.info.device)
        self.n_acc, self.last_loss, self.img_s = 0, float("nan"), 0.0
        self.last_ckpt = latest_checkpoint(s.run_dir) if resume else None
        self.t_mark, self.step_mark = time.perf_counter(), s.start
        if resume and s.info.is_main:
            truncate_metrics(s.run_dir, s.start)
        self.metrics = open(s.run_dir / METRICS, "a") if s.info.is_main else None
        self.tracker = make_tracker(s.cfg.train.log, s.run_dir, enabled=s.info.is_main)

    def record(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.loss_sum += loss
        self.norm_sum += grad_norm
        self.n_acc += 1

    def flush(self, step: int, k_curriculum: int) -> None:
        """Mean loss since the last flush, throughput, a metrics line; stops training on a non-finite loss."""
        s = self.s
        if self.n_acc == 0:
            return
        mean = torch.stack([self.loss_sum, self.norm_sum]) / self.n_acc
        if s.info.enabled:
            torch.distributed.all_reduce(mean, op=torch.distributed.ReduceOp.AVG)
        self.last_loss, grad_norm = mean.tolist()
        now = time.perf_counter()
        self.img_s = s.cfg.train.batch_size * (step - self.step_mark) / max(now - self.t_mark, 1e-9)
        if not math.isfinite(self.last_loss):
            where = f"; the last good checkpoint is {self.last_ckpt}" if self.last_ckpt else "; no checkpoint was written"
            raise TrainingStopped(f"loss became {self.last_loss} before step {step}{where} (try a lower --lr)", self.last_ckpt, 3)
        if self.metrics is not None:
            row = {"step": step, "loss": self.last_loss, "lr": s.optimizer.param_groups[0]["lr"], "img_per_s": self.img_s,
                   "N": s.objective.num_steps(k_curriculum), "grad_norm": grad_norm, "time": time.time()}
            self.metrics.write(json.dumps(row) + "\n")
            self.metrics.flush()
            self.tracker.scalars(step, {k: v for k, v in row.items() if k not in ("step", "time")})
        self.progress.update(loss=self.last_loss, img_s=self.img_s)
        self.loss_sum, self.norm_sum, self.n_acc = torch.zeros((), device=s.info.device), torch.zeros((), device=s.info.device), 0
        self.t_mark, self.step_mark = now, step

    def preview(self, step: int) -> None:
        if self.s.info.is_main:
            path = self.s.run_dir / "samples" / f"step_{step:08d}.png"
            preview(self.s.ema.module.eval(), self.s.preview_x, self.s.preview_y, path)
            if path.is_file():
                self.tracker.image(step, "samples", path)

    def save(self, step: int) -> None:
        s = self.s
        if s.info.is_main:
            self.last_ckpt = save_checkpoint(
                s.run_dir, step, model=s.raw, ema=s.ema, target=s.target_ema, optimizer=s.optimizer,
                state={"loss": self.last_loss, "version": s.cfg.version, "time": time.time(),
                       "budget_spent": s.clock.spent()},
            )
        self.preview(step)
        barrier(s.info)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.tracker.close()


def _train(cfg, run_dir, info: DistInfo, resume, force, stop_after, show_progress, data, teacher, lock) -> TrainResult:
    s = _setup(cfg, run_dir, info, resume, force, data, teacher, lock)
    tc, clock = cfg.train, s.clock
    end = tc.steps if stop_after is None else min(stop_after, tc.steps)
    progress = _Progress(show_progress and info.is_main, None if clock.enabled else end, s.start)
    books = _Bookkeeping(s, resume, progress)
    step = k_curriculum = s.start
    try:
        with _StopFlag() as stop, progress:
            s.net.train()
            while step < end:
                k_curriculum = clock.curriculum_step(step)
                books.record(*_train_step(s, step, k_curriculum))
                step += 1
                clock.start()
                progress.advance()
                # The budget is checked every step alone, at log boundaries under torchrun (one all-reduce).
                if clock.enabled and (step % tc.log_every == 0 or not info.enabled) and any_rank(clock.done(), info):
                    end = step  # the budget is spent: this step is the last
                at_log = step % tc.log_every == 0 or step == end
                if at_log or step % tc.ckpt_every == 0:
                    books.flush(step, k_curriculum)
                if step % tc.ckpt_every == 0 and step < end:
                    books.save(step)
                if (at_log and any_rank(stop.set, info)) or (not info.enabled and stop.set):
                    books.flush(step, k_curriculum)
                    if books.last_ckpt is None or books.last_ckpt.name != f"step_{step:08d}":  # once per step
                        books.save(step)
                    raise TrainingStopped(f"interrupted at step {step}; checkpoint saved to {books.last_ckpt}; "
                                          "continue with --resume", books.last_ckpt, stop.exit_code)
                if step % tc.sample_every == 0 and step < end:
                    books.preview(step)
            books.flush(step, k_curriculum)
            if books.last_ckpt is None or books.last_ckpt.name != f"step_{step:08d}":
                books.save(step)
    finally:
        books.close()
    return TrainResult(run_dir, step, books.last_loss, books.img_s, books.last_ckpt)


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
