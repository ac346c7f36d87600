"""Bounds how long a database connection may stay checked out: a silent database
(packets dropped, host frozen) must cost a bounded wait, never a hang.

Server-side timeouts cannot help when the server never sees the query, and TCP
timeouts cannot help when something on the path still acknowledges the packets
(a proxy, a frozen host's kernel). So the client bounds it: every checkout of a
connection is armed with a deadline (the pool's ping runs after arming, so a dead
idle connection is covered too); one daemon thread shuts down the sockets of every
connection of the engine once any of them is overdue. The blocked call then fails
at once with a disconnect error, SQLAlchemy invalidates those connections, and the
caller's retry gets fresh ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

log = logging.getLogger(__name__)


def _shutdown_socket(dbapi_connection: Any) -> None:
    """Shut down the connection's socket under libpq's feet (thread-safe: nothing is freed;
    the owner's blocked read returns end-of-file)."""
    try:
        fd = dbapi_connection.fileno()
    except Exception:  # noqa: BLE001 - already closed: nothing to cut
        return
    with contextlib.suppress(OSError):
        dup = socket.socket(fileno=os.dup(fd))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()


class ConnectionWatchdog:
    """Arms a deadline on each checkout of an engine's connections; severs them all once
    one is overdue. `severed` counts how often that happened (for tests and metrics)."""

    def __init__(self, timeout_s: float, *, tick_s: float = 0.25) -> None:
        self.timeout_s = timeout_s
        self.tick_s = tick_s
        self.severed = 0
        self._lock = threading.Lock()
        self._deadlines: dict[int, tuple[float, Any]] = {}
        self._all: weakref.WeakSet[Any] = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "connect", self._on_connect)
        event.listen(engine, "checkout", self._on_checkout)
        event.listen(engine, "checkin", self._on_checkin)
        event.listen(engine, "close", self._on_checkin)

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        with self._lock:
            self._all.add(dbapi_connection)

    def _on_checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        self._arm(dbapi_connection)
        # The pool's own pre-ping runs before this event, unarmed; this ping runs armed.
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
        except Exception as exc:  # noqa: BLE001 - any driver error: this connection is dead
            self._disarm(dbapi_connection)
            raise DisconnectionError(f"connection failed its checkout ping: {exc}") from exc

    def _on_checkin(self, dbapi_connection: Any, _record: Any) -> None:
        self._disarm(dbapi_connection)

    def _arm(self, dbapi_connection: Any) -> None:
        with self._lock:
            self._deadlines[id(dbapi_connection)] = (time.monotonic() + self.timeout_s,
                                                     dbapi_connection)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True,
                                                name="db-watchdog")
                self._thread.start()

    def _disarm(self, dbapi_connection: Any) -> None:
        with self._lock:
            self._deadlines.pop(id(dbapi_connection), None)

    def _watch(self) -> None:
        while True:
            time.sleep(self.tick_s)
            now = time.monotonic()
            with self._lock:
                overdue = [c for deadline, c in self._deadlines.values() if deadline <= now]
                if not overdue:
                    continue
                # The database is not answering: every connection to it is suspect, and
                # each idle one would otherwise cost the caller another full timeout.
                victims = list(self._all)
                self._deadlines.clear()
                self.severed += 1
            log.error("database did not answer within %.0f s: closing %s connection(s); "
                      "the work is retried on fresh ones", self.timeout_s, len(victims))
            for connection in victims:
                _shutdown_socket(connection)
