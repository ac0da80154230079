"""Wall-clock timing that means something: warm up, synchronise the device, take the median."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device | str, warmup: int = 2, repeats: int = 5,
                   min_seconds: float = 0.0) -> float:
    """Median wall time of fn() after `warmup` calls; at least `repeats` calls, more (up to 1000) until
    `min_seconds` have passed. Pass device "cpu" for work that returns only when done (host I/O)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < 1000):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
