"""Group commit: webhook requests handled at the same time in one web process share one write.

Under load most of a webhook's cost is its one Redis round trip (system calls on both ends,
the script's start-up, the append-only file). Requests that arrive while a write is in flight
wait for it to finish, then go together in the next one: one round trip for all of them. A
request that finds no write in flight goes at once, so an unloaded receiver adds no latency.

Leader/follower, no extra thread: whoever finds the line idle leads (writes everything queued,
its own request first); on finishing it hands the lead to the first request that queued
meanwhile. Works with threads and with gevent's patched primitives alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("error", "item", "lead", "ready", "result", "size")

    def __init__(self, item: T, size: int) -> None:
        self.item = item
        self.size = size
        self.result: R | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.lead = False

    def outcome(self) -> R:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit(Generic[T, R]):
    """Calls `write(items) -> results` (one result per item, same order) for concurrent
    `submit`s; an exception from `write` is raised in every request of that write."""

    def __init__(
        self,
        write: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_size: int = 1000,
        wait_timeout: float = 10.0,
    ) -> None:
        self._write = write
        self._max_size = max_size  # events per write, so one Redis call stays bounded
        self._wait_timeout = wait_timeout  # seconds a queued request waits before giving up
        self._lock = threading.Lock()
        self._pending: list[_Slot[T, R]] = []
        self._busy = False  # a write is in flight; invariant: not busy => nothing pending

    def submit(self, item: T, size: int = 1) -> R:
        """Write `item` (with whatever else is queued) and return its result.

        Raises:
            Exception: what `write` raised; redis.TimeoutError if the write in flight took
                longer than `wait_timeout` (whether this item landed is then unknown).
        """
        slot: _Slot[T, R] = _Slot(item, size)
        with self._lock:
            self._pending.append(slot)
            slot.lead = not self._busy
            self._busy = True
        if not slot.lead:
            try:
                ready = slot.ready.wait(self._wait_timeout)
            except BaseException:  # interrupted while queued (a gevent Timeout, a shutdown)
                self._leave(slot)
                raise
            if not ready:
                with self._lock:
                    if not slot.lead:  # not handed the lead in the meantime: give up
                        if slot in self._pending:
                            self._pending.remove(slot)
                        raise RedisTimeoutError("the write in flight did not finish in time")
        if slot.lead:
            self._lead(slot)
        return slot.outcome()

    def _take(self) -> list[_Slot[T, R]]:
        batch: list[_Slot[T, R]] = []
        size = 0
        with self._lock:
            while self._pending and (not batch or size + self._pending[0].size <= self._max_size):
                slot = self._pending.pop(0)
                batch.append(slot)
                size += slot.size
        return batch

    def _lead(self, own: _Slot[T, R]) -> None:
        batch: list[_Slot[T, R]] = []
        try:
            time.sleep(0)  # let requests already being parsed join this write (gevent: a yield)
            batch = self._take()  # the leader's own slot is first in line
            try:
                results = self._write([s.item for s in batch])
                for s, r in zip(batch, results, strict=True):
                    s.result = r
            except BaseException as exc:  # every request of the write learns it failed
                for s in batch:
                    s.error = exc
        finally:  # whatever happened, the line must not stay without a leader
            for s in batch:
                s.ready.set()
            self._leave(own)

    def _leave(self, slot: _Slot[T, R]) -> None:
        """Take `slot` out of the line; if it held the lead, pass the lead on."""
        with self._lock:
            if slot in self._pending:
                self._pending.remove(slot)
            if not slot.lead:
                return
            slot.lead = False
            successor = self._pending[0] if self._pending else None
            if successor is not None:
                successor.lead = True
            else:
                self._busy = False
        if successor is not None:
            successor.ready.set()
