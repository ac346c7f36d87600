"""One frame's failure stays that frame's: an exception becomes a DLQ reason, never a crash.

Every step that handles frames one at a time (validate, decode, heatmap) runs each
frame through `guarded`; a step that handles a batch at once (the database write)
goes through `split_failures`, which halves a failing batch until the frames that
fail alone are found. A record that raised would otherwise stop the worker before
its offset was committed, and every worker that took the partition after it would
stop on the same record: the line would be down for one bad frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from pipeline.frames import FrameRejectedError, RejectReason

log = logging.getLogger(__name__)
T = TypeVar("T")
X = TypeVar("X")

# A second try rules out a passing fault (a failed allocation while the decode pool was
# full); a third would only repeat a deterministic one.
ATTEMPTS = 2


def internal_error(exc: BaseException, what: str) -> FrameRejectedError:
    """The DLQ reason for a frame that made the worker raise: names the exception type."""
    return FrameRejectedError(RejectReason.INTERNAL_ERROR,
                              f"{what} raised {type(exc).__name__}: {exc}"[:1000])


def guarded(fn: Callable[[], T], *, what: str, attempts: int = ATTEMPTS
            ) -> T | FrameRejectedError:
    """fn() for one frame; its rejection, or after `attempts` tries any other exception
    as an internal_error rejection, is returned instead of raised."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except FrameRejectedError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - whatever one frame raises is its own
            if attempt < attempts:
                log.warning("%s raised %s: %s; trying once more", what,
                            type(exc).__name__, exc)
                continue
            log.exception("%s failed %s times: the frame goes to the DLQ", what, attempts)
            return internal_error(exc, what)
    raise AssertionError("unreachable: attempts >= 1")


def split_failures(items: Sequence[X], run: Callable[[Sequence[X]], None], *, what: str,
                   systemic: Callable[[Exception], bool] = lambda _exc: False,
                   attempts: int = ATTEMPTS) -> list[tuple[X, FrameRejectedError]]:
    """run(items) as one call; when it raises, each half again, down to single items.

    Returns the items that failed alone (tried `attempts` times), each with an
    internal_error rejection; every other item went through `run` once, in a call
    that succeeded (so `run` must be all-or-nothing, as one transaction is). An
    exception for which `systemic(exc)` holds is no frame's fault (a missing table, a
    revoked permission) and is raised at once: it would send the whole line to the DLQ."""
    failed: list[tuple[X, FrameRejectedError]] = []

    def attempt(part: Sequence[X]) -> None:
        for _ in range(attempts if len(part) == 1 else 1):
            try:
                run(part)
                return
            except Exception as exc:  # noqa: BLE001 - narrowed by `systemic`
                if systemic(exc):
                    raise
                error = exc
        if len(part) > 1:
            log.warning("%s failed on %s frames (%s: %s); splitting to find the frame",
                        what, len(part), type(error).__name__, error)
            half = len(part) // 2
            attempt(part[:half])
            attempt(part[half:])
            return
        log.error("%s failed %s times on one frame (%s: %s): the frame goes to the DLQ",
                  what, attempts, type(error).__name__, error)
        failed.append((part[0], internal_error(error, what)))

    if items:
        attempt(items)
    return failed
