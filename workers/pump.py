"""The pump: turns the inbox's records into RQ jobs (the second ingest step, workers/queueing.py).

Every worker process runs one, in a thread. A short lease in Redis lets one drain at a time;
the others stand by and one takes over within LEASE seconds of the holder's death. Draining is
safe without the lease too (the script does nothing if another pump drained first); the lease
only spares the work of pumps racing for the same records.
"""

from __future__ import annotations

import logging
import threading
import time

from .locks import Locks
from .queueing import EventQueue

log = logging.getLogger(__name__)

LEASE = 5.0  # seconds; how long events wait for a new pump after a worker dies
IDLE_WAIT = 1.0  # seconds one blocking peek at an empty inbox lasts
MAX_BACKOFF = 5.0  # seconds between attempts while Redis is unreachable


class Pump:
    """Drains the inbox while held; never raises out of its thread."""

    def __init__(self, events: EventQueue) -> None:
        self.events = events
        self._locks = Locks(events.redis, ttl=LEASE)
        self._key = events.inbox_key + ":pump"
        self._token: str | None = None
        self._renewed = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Pump:
        self._thread = threading.Thread(target=self._run, name="tagsync-pump", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = IDLE_WAIT + 2) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._token is not None:
            try:  # hand over now rather than after LEASE seconds
                self._locks.release(self._key, self._token)
            except Exception:  # the lease expires by itself
                log.debug("pump lease not released", exc_info=True)
            self._token = None

    def step(self) -> int:
        """Drain once if this pump holds the lease (else wait a little): events taken."""
        if not self._hold():
            self._stop.wait(IDLE_WAIT)
            return 0
        moved = self.events.drain()
        if moved == 0:
            self.events.wait_for_inbox(IDLE_WAIT)
        return moved or 0

    def _hold(self) -> bool:
        now = time.monotonic()
        if self._token is not None:
            if now - self._renewed < LEASE / 3:
                return True
            if self._locks.renew(self._key, self._token):
                self._renewed = now
                return True
            log.warning("inbox pump lease lost; another worker's pump takes over")
        self._token = self._locks.try_acquire(self._key)
        self._renewed = now
        return self._token is not None

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                self.step()
                delay = 0.1
            except Exception as exc:  # Redis down or restarting: the records wait in the inbox
                log.warning("inbox pump: %s; trying again in %.1f s", type(exc).__name__, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
