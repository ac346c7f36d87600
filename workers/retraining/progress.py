"""What a retraining run is doing, with elapsed time, and where it stood when stopped.

Every long step logs when it starts and how long it took, so a run is never silent for
minutes; an interrupted run names the step it was in (see workers.cli.retrain).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class RetrainInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """SIGTERM or SIGINT during a run: raised in the main thread by the CLI's handler.

    A BaseException, so no `except Exception` on the way up swallows it."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(signal_name)
        self.signal_name, self.exit_code = signal_name, exit_code


class Progress:
    def __init__(self, product: str = "", clock: object = time.monotonic) -> None:
        self._clock = clock
        self.reset(product)

    def reset(self, product: str) -> None:
        """A new product's run starts."""
        self.product = product
        self.started = self._clock()  # type: ignore[operator]
        self.step = "starting"
        self.checkpoint: Path | None = None  # training checkpoint of this run, once known

    def elapsed(self) -> float:
        return self._clock() - self.started  # type: ignore[operator]

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        self.step = step
        begun = self._clock()  # type: ignore[operator]
        log.info("product %s: %s ... (%.0f s into the run)", self.product, step, self.elapsed())
        yield
        log.info("product %s: %s done in %.1f s (%.0f s into the run)", self.product, step,
                 self._clock() - begun, self.elapsed())  # type: ignore[operator]

    def where(self) -> str:
        """Where the run stood, for the one line an interrupted run logs."""
        if not self.product:
            return "start-up, before any product's run"
        text = f"product {self.product}, step '{self.step}', {self.elapsed():.0f} s into the run"
        epoch = checkpoint_epoch(self.checkpoint) if self.checkpoint else None
        if epoch is not None:
            text += f"; checkpoint after epoch {epoch + 1} kept in {self.checkpoint.parent}"
        return text


def checkpoint_epoch(path: Path) -> int | None:
    """The last finished epoch (0-based) saved in a training checkpoint, None if there is none."""
    if not path.is_file():
        return None
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except Exception:  # noqa: BLE001 - a half-written checkpoint says nothing
        return None
