"""SIGTERM/SIGINT for long-running processes: stop gently, but within a stated bound.

The first signal sets `stop` (the worker finishes its batch, commits, leaves the
group) and starts a timer: if the process is still alive `bound_s` later (a
dependency that stopped answering), it exits hard. Nothing is lost by that: offsets
are committed only after verdicts are durable, so what was in flight is redelivered.
A second signal exits at once. Installed first thing, before the slow imports and
model loading, so a SIGTERM during start-up is a clean exit too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

EXIT_FORCED = 3  # the bound passed (or a second signal) before a clean stop


def install_stop_handlers(bound_s: float, stop: threading.Event | None = None
                          ) -> threading.Event:
    stop = stop or threading.Event()

    def force_exit_after(seconds: float) -> None:
        time.sleep(seconds)
        log.error("still stopping %.0f s after the signal: exiting now; uncommitted frames "
                  "are redelivered to the group", seconds)
        _exit_now()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            log.warning("signal %s again: exiting now", signum)
            _exit_now()
        log.info("signal %s: finishing the current batch, then leaving (at most %.0f s)",
                 signum, bound_s)
        stop.set()
        threading.Thread(target=force_exit_after, args=(bound_s,), daemon=True,
                         name="forced-exit").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(EXIT_FORCED)
