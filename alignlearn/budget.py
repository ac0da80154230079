"""Time-budgeted training: the curriculum index k follows wall-clock time instead of the step count.

With a budget of B seconds and a nominal K steps, the objective sees k = K * spent / B, so the step
schedule N(k) spans the whole budget whatever the device's speed; training stops when B is spent
(or at K steps). The first step of a process is not counted: it is where torch.compile works.
Such runs resume (the spent time is saved with each checkpoint) but not bit-exactly, since k
depends on the clock.
"""

from __future__ import annotations

import time


class TimeBudget:
    def __init__(self, seconds: float, total_steps: int, spent: float = 0.0):
        self.seconds, self.total_steps, self._spent_before = seconds, total_steps, spent
        self._t0: float | None = None

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def spent(self) -> float:
        return self._spent_before + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def curriculum_step(self, step: int) -> int:
        if not self.enabled:
            return step
        return min(self.total_steps - 1, int(self.total_steps * self.spent() / self.seconds))

    def done(self) -> bool:
        return self.enabled and self.spent() >= self.seconds
