"""Whether the inference worker is still making progress: its liveness probe.

The metrics endpoint has a thread of its own, so it answers while the worker's loop is
stuck in a call that never returns: an inference hung on the GPU, or a delivery that
never finishes, which the loop waits for while it keeps the consumer group's
membership alive. Probed on /metrics, Kubernetes keeps such a pod for ever, with its
GPU and its partitions, and the line's frames wait in Kafka. So the loop beats each
time it goes round, and each retry of an unreachable dependency beats too (a wait the
worker chose: restarting it would not bring the database back); /healthz answers 503
once no beat came for `stall_after_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Liveness:
    def __init__(self, stall_after_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if stall_after_s <= 0:
            raise ValueError(f"stall_after_s must be positive, got {stall_after_s}")
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._last = clock()  # a worker starts alive: its engines are loaded by then

    def beat(self) -> None:
        """The worker made progress (one float store: safe from any thread)."""
        self._last = self._clock()

    def silent_for(self) -> float:
        """Seconds since the last beat."""
        return max(0.0, self._clock() - self._last)

    def stalled(self) -> bool:
        return self.silent_for() > self.stall_after_s
