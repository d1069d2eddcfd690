"""Group commit: requests that arrive during a write share the next one; nobody is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workers.groupcommit import GroupCommit, _Slot


class Writer:
    """Records each write; the first one blocks until released, so others queue behind it."""

    def __init__(self, fail: bool = False) -> None:
        self.writes: list[list[str]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail = fail

    def __call__(self, items: Sequence[str]) -> list[str]:
        self.writes.append(list(items))
        if len(self.writes) == 1:
            self.started.set()
            assert self.release.wait(5)
        if self.fail:
            raise RedisConnectionError("down")
        return [f"done:{x}" for x in items]


def submit_in_thread(
    group: GroupCommit[str, str], item: str, out: dict[str, object], size: int = 1
) -> None:
    def run() -> None:
        try:
            out[item] = group.submit(item, size)
        except BaseException as exc:  # Interrupted too
            out[item] = exc

    t = threading.Thread(target=run)
    t.start()
    out.setdefault("_threads", []).append(t)  # type: ignore[union-attr]


def join(out: dict[str, object]) -> None:
    for t in out.pop("_threads"):  # type: ignore[attr-defined]
        t.join(5)
        assert not t.is_alive()


def first_write_in_flight(
    writer: Writer, **options: float
) -> tuple[GroupCommit[str, str], dict[str, object]]:
    """A group whose first write ("a") is under way and blocked until `writer.release`."""
    group: GroupCommit[str, str] = GroupCommit(writer, **options)  # type: ignore[arg-type]
    out: dict[str, object] = {}
    submit_in_thread(group, "a", out)
    assert writer.started.wait(5)
    return group, out


def queued(group: GroupCommit[str, str], n: int) -> None:
    deadline = time.monotonic() + 5
    while len(group._pending) < n:
        assert time.monotonic() < deadline, "requests did not queue"
        time.sleep(0.001)


def test_alone_a_request_writes_at_once() -> None:
    writes: list[list[str]] = []
    group: GroupCommit[str, str] = GroupCommit(lambda items: writes.append(list(items)) or items)
    assert group.submit("a") == "a"
    assert group.submit("b") == "b"
    assert writes == [["a"], ["b"]]


def test_requests_arriving_during_a_write_share_the_next_one() -> None:
    writer = Writer()
    group, out = first_write_in_flight(writer)
    for item in ("b", "c", "d"):
        submit_in_thread(group, item, out)
    queued(group, 3)
    writer.release.set()
    join(out)
    assert writer.writes == [["a"], ["b", "c", "d"]]
    assert out == {x: f"done:{x}" for x in "abcd"}
    assert group.submit("e") == "done:e"  # the line is idle again: written at once
    assert writer.writes[-1] == ["e"]


def test_a_failed_write_fails_every_request_in_it_and_the_line_recovers() -> None:
    writer = Writer(fail=True)
    group, out = first_write_in_flight(writer)
    submit_in_thread(group, "b", out)
    submit_in_thread(group, "c", out)
    queued(group, 2)
    writer.release.set()
    join(out)
    assert all(isinstance(out[x], RedisConnectionError) for x in "abc")
    writer.fail = False
    assert group.submit("d") == "done:d"


def test_one_write_carries_at_most_max_size_events() -> None:
    writer = Writer()
    group, out = first_write_in_flight(writer, max_size=250)
    for item in ("b", "c", "d"):
        submit_in_thread(group, item, out, size=100)
    queued(group, 3)
    writer.release.set()
    join(out)
    assert sorted(map(len, writer.writes)) == [1, 1, 2]  # 100 + 100 fit, the third waits
    assert {out[x] for x in "bcd"} == {"done:b", "done:c", "done:d"}


def test_a_request_behind_a_stuck_write_gives_up_and_is_never_written() -> None:
    writer = Writer()
    group, out = first_write_in_flight(writer, wait_timeout=0.2)
    with pytest.raises(RedisTimeoutError):
        group.submit("b")  # the receiver answers 503; the sender retries
    writer.release.set()
    join(out)
    assert out["a"] == "done:a"
    assert writer.writes == [["a"]]  # "b" left the line: not written behind the sender's back
    assert group.submit("c") == "done:c"


class Interrupted(BaseException):
    """What gevent's Timeout or a worker shutdown throws into a waiting request."""


def test_a_leader_interrupted_before_writing_passes_the_line_on(monkeypatch) -> None:
    writer = Writer()
    writer.release.set()
    group: GroupCommit[str, str] = GroupCommit(writer)
    sleeps = []

    def interrupted_once(_: float) -> None:
        sleeps.append(1)
        if len(sleeps) == 1:
            raise Interrupted

    monkeypatch.setattr("workers.groupcommit.time.sleep", interrupted_once)
    with pytest.raises(Interrupted):
        group.submit("a")
    assert group.submit("b") == "done:b"  # not stuck behind a leader that is gone
    assert writer.writes == [["b"]]


def test_a_request_interrupted_after_being_handed_the_lead_passes_it_on(monkeypatch) -> None:
    class InterruptedOnWake(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            super().wait(timeout)
            raise Interrupted

    real_init = _Slot.__init__

    def init(self: _Slot[str, str], item: str, size: int) -> None:
        real_init(self, item, size)
        if item == "b":
            self.ready = InterruptedOnWake()

    monkeypatch.setattr(_Slot, "__init__", init)
    writer = Writer()
    group, out = first_write_in_flight(writer)
    submit_in_thread(group, "b", out)  # first in line: will be handed the lead, then interrupted
    queued(group, 1)
    submit_in_thread(group, "c", out)
    queued(group, 2)
    writer.release.set()
    join(out)
    assert isinstance(out["b"], Interrupted)
    assert out["a"] == "done:a" and out["c"] == "done:c"
    assert writer.writes == [["a"], ["c"]]
    assert group.submit("d") == "done:d"
