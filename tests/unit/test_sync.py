"""The sync rules of DESIGN.md section 10, on fake sides (sets of emails) and fakeredis."""

from __future__ import annotations

from dataclasses import dataclass, field

import fakeredis
import pytest

from mapping_store import Mapping, Store
from workers.errors import ContactNotFound
from workers.events import TagEvent
from workers.sync import ECHO_SKEW, KeyState, SyncEngine, decide

EMAIL = "jane@example.com"
T0 = 1_700_000_000.0


@dataclass
class FakeSide:
    system: str
    holders: set[str] = field(default_factory=set)
    known: set[str] = field(default_factory=lambda: {EMAIL})
    calls: list[tuple[str, str]] = field(default_factory=list)

    def tag_name(self, mapping: Mapping) -> str:
        return mapping.klcode_tag if self.system == "klcode" else mapping.ac_tag_name

    def apply(self, mapping: Mapping, email: str, op: str) -> bool:
        if email not in self.known:
            raise ContactNotFound("missing")
        self.calls.append((email, op))
        had = email in self.holders
        (self.holders.add if op == "add" else self.holders.discard)(email)
        return had != (op == "add")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sides() -> dict[str, FakeSide]:
    return {"klcode": FakeSide("klcode"), "ac": FakeSide("ac")}


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 5)


@pytest.fixture
def engine(
    redis: fakeredis.FakeRedis, store: Store, sides: dict[str, FakeSide], clock: Clock
) -> SyncEngine:
    return SyncEngine(redis=redis, store=store, sides=sides, clock=clock)  # type: ignore[arg-type]


@pytest.fixture
def mapping(store: Store) -> Mapping:
    return store.create_mapping(klcode_tag="VIP Customer", ac_tag_id=7, ac_tag_name="VIP")


_n = iter(range(10_000))


def ev(source: str, op: str, at: float, email: str = EMAIL, tag: str | None = None) -> TagEvent:
    return TagEvent(
        source=source,  # type: ignore[arg-type]
        event_id=f"{source}:{next(_n)}",
        op=op,  # type: ignore[arg-type]
        email=email,
        tag=tag or ("VIP Customer" if source == "klcode" else "vip "),
        occurred_at=at,
        received_at=at,
    )


def test_klcode_add_reaches_ac_and_its_echo_is_consumed(engine, sides, mapping, clock) -> None:
    assert engine.process(ev("klcode", "add", T0)).outcome == "applied"
    assert sides["ac"].holders == {EMAIL}
    echo = engine.process(ev("ac", "add", clock.now))
    assert echo.outcome == "echo"
    assert sides["klcode"].calls == []


def test_one_write_expects_one_echo(engine, sides, mapping, clock) -> None:
    sides["klcode"].holders.add(EMAIL)
    engine.process(ev("klcode", "add", T0))
    assert engine.process(ev("ac", "add", clock.now)).outcome == "echo"
    # A second AC add in the window is not ours: it is processed (KlCode already has the tag).
    assert engine.process(ev("ac", "add", clock.now + 1)).outcome == "already_in_sync"


def test_a_write_that_changed_nothing_expects_no_echo(engine, sides, mapping, clock) -> None:
    sides["ac"].holders.add(EMAIL)
    assert engine.process(ev("klcode", "add", T0)).outcome == "already_in_sync"
    sides["klcode"].holders.clear()
    # A person adds the tag in AC later (after removing it): that is a real change.
    assert engine.process(ev("ac", "add", clock.now + 1)).outcome == "applied"
    assert sides["klcode"].holders == {EMAIL}


def test_echo_must_match_op_and_time(engine, sides, mapping, clock) -> None:
    engine.process(ev("klcode", "add", T0))
    far = engine.process(ev("ac", "add", clock.now + ECHO_SKEW + 30))
    assert far.outcome != "echo"


def test_late_older_event_is_stale(engine, sides, mapping) -> None:
    sides["ac"].holders.add(EMAIL)
    assert engine.process(ev("klcode", "remove", T0 + 2)).outcome == "applied"
    late_add = engine.process(ev("klcode", "add", T0 + 1))
    assert late_add.outcome == "stale"
    assert sides["ac"].holders == set()


def test_in_order_add_then_remove_ends_removed(engine, sides, mapping) -> None:
    engine.process(ev("klcode", "add", T0))
    engine.process(ev("klcode", "remove", T0 + 1))
    assert sides["ac"].holders == set()


def test_newest_change_from_either_system_wins(engine, sides, mapping, clock) -> None:
    # AC removal at T0+3 is newer than the KlCode add at T0+1 that arrives after it.
    sides["klcode"].holders.add(EMAIL)
    assert engine.process(ev("ac", "remove", T0 + 3)).outcome == "applied"
    assert engine.process(ev("klcode", "add", T0 + 1)).outcome == "stale"
    assert sides["klcode"].holders == set() and sides["ac"].holders == set()


def test_restore_when_our_write_overwrote_a_newer_change(engine, sides, mapping, clock) -> None:
    # KlCode add at T0; a person removes it in AC at T0+2; our write lands at T0+5 on top of it.
    sides["klcode"].holders.add(EMAIL)
    engine.process(ev("klcode", "add", T0))
    assert sides["ac"].holders == {EMAIL}
    clock.now = T0 + 8
    result = engine.process(ev("ac", "remove", T0 + 2))
    assert result.outcome == "applied"
    assert "restore" in result.detail
    assert sides["ac"].holders == set()  # restored: the person's removal stands
    assert sides["klcode"].holders == set()  # and it is the newest change, so it propagates


def test_one_way_restores_target_but_never_writes_source(
    engine, sides, mapping, store, clock
) -> None:
    store.update_mapping(mapping.id, direction="klcode_to_ac")
    engine.process(ev("klcode", "add", T0))
    clock.now = T0 + 8
    result = engine.process(ev("ac", "remove", T0 + 2))
    assert result.outcome == "applied"
    assert sides["ac"].holders == set()
    assert sides["klcode"].calls == []


def test_direction_blocks_copy_but_records_the_change(engine, sides, mapping, store) -> None:
    store.update_mapping(mapping.id, direction="ac_to_klcode")
    assert engine.process(ev("klcode", "add", T0 + 5)).outcome == "direction"
    assert sides["ac"].calls == []
    # An older AC change arriving late must not undo the newer KlCode change.
    assert engine.process(ev("ac", "add", T0 + 1)).outcome == "stale"


def test_inactive_mapping_copies_nothing(engine, sides, mapping, store) -> None:
    store.update_mapping(mapping.id, active=False)
    assert engine.process(ev("klcode", "add", T0)).outcome == "inactive"
    assert engine.process(ev("ac", "add", T0 + 1)).outcome == "inactive"
    assert sides["ac"].calls == [] and sides["klcode"].calls == []


def test_unmapped_tag(engine, mapping) -> None:
    assert engine.process(ev("klcode", "add", T0, tag="Something Else")).outcome == "no_mapping"


def test_missing_contact_raises_and_retry_is_not_stale(engine, sides, mapping) -> None:
    sides["ac"].known.clear()
    event = ev("klcode", "add", T0)
    with pytest.raises(ContactNotFound):
        engine.process(event)
    sides["ac"].known.add(EMAIL)
    assert engine.process(event).outcome == "applied"  # the same event, retried later


def test_renamed_ac_tag_still_maps(redis, store, sides, clock, mapping) -> None:
    engine = SyncEngine(
        redis=redis, store=store, sides=sides, clock=clock, resolve_ac_tag=lambda name: 7
    )
    sides["klcode"].holders.clear()
    result = engine.process(ev("ac", "add", T0, tag="VIP (renamed)"))
    assert result.outcome == "applied"
    assert store.get_mapping(mapping.id).ac_tag_name == "VIP (renamed)"


def test_decide_is_pure(mapping) -> None:
    state = KeyState(ts=T0, op="add", src="klcode", eid="x")
    assert decide(state, ev("ac", "remove", T0 - 1), mapping).stale
    d = decide(state, ev("ac", "remove", T0 + 1), mapping)
    assert not d.stale and d.copy_to == "klcode" and not d.restore


def test_same_second_changes_go_to_the_later_arrival(engine, sides, mapping) -> None:
    sides["klcode"].holders.add(EMAIL)
    engine.process(ev("ac", "add", T0 + 20))
    engine.process(ev("ac", "remove", T0 + 20))
    assert sides["klcode"].holders == set()


def test_echo_after_a_replayed_duplicate_is_still_consumed_once(
    engine, sides, mapping, clock
) -> None:
    event = ev("klcode", "add", T0)
    engine.process(event)
    assert (
        engine.process(event).outcome == "already_in_sync"
    )  # replayed: AC answers 200, no new echo
    assert engine.process(ev("ac", "add", clock.now)).outcome == "echo"
    assert sides["klcode"].calls == []
    assert sides["ac"].calls == [(EMAIL, "add"), (EMAIL, "add")]
