"""The sync decision: last writer wins, by when the change happened (DESIGN.md section 10).

Per (mapping, customer email) we keep, in Redis:
- the newest real change seen from either system (time, op, system, event id): an event older
  than it is stale, whatever order the queue delivered them in;
- our last write to each system (op, when it started and ended, and the time of the change it
  copied): a change made in that system after the change we copied but before our write
  landed was overwritten by us, so when its event arrives we restore it;
- echo markers: before each write, the (system, email, tag, op) and the time window in which
  its echo webhook will be stamped. A matching event is our own write coming back and is
  consumed once; a write that changed nothing drops its marker, since it fires no webhook.

All of it is read, decided and written under a short per-key lock, so an add and a quick
remove handled by two workers can never interleave.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field

from redis import Redis

from mapping_store import Mapping, Store, tag_key

from .errors import ContactNotFound
from .events import TagEvent, other
from .locks import Locks
from .queueing import mask_email
from .sides import Side

log = logging.getLogger(__name__)

STATE_TTL = 30 * 24 * 3600  # seconds per-key ordering state is kept after its last change
ECHO_TTL = 24 * 3600  # seconds an unconsumed echo marker is kept (matching is by time, not age)
ECHO_SKEW = 10.0  # seconds of clock difference tolerated between us and KlCode/AC stamps
PENDING_WRITE_WINDOW = 120.0  # seconds a marker stays matchable if its writer died mid-write
RESTORE_SKEW = 1.0  # seconds: a change stamped this soon after our write may predate it (AC rounds)
LOCK_TTL = 15.0  # seconds; the holder renews it every LOCK_TTL / 3, so only a dead holder loses it
LOCK_WAIT = 30.0  # seconds a worker waits for another's lock before retrying the job later
AC_TAG_NAME_TTL = 3600  # seconds an AC tag name -> id lookup is cached (also negative answers)


@dataclass
class Write:
    op: str
    started: float
    finished: float
    src_ts: float  # when the change we wrote happened in its own system


@dataclass
class KeyState:
    ts: float | None = None
    op: str | None = None
    src: str | None = None
    eid: str | None = None
    writes: dict[str, Write] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> KeyState:
        if not raw:
            return cls()
        data = json.loads(raw)
        writes = {k: Write(**v) for k, v in (data.pop("writes", None) or {}).items()}
        return cls(**data, writes=writes)


@dataclass(frozen=True)
class Decision:
    stale: bool = False
    detail: str = ""
    copy_to: str | None = None  # the other system, when the direction allows the copy
    restore: bool = False  # our earlier write overwrote this change: write it back to its source


def decide(state: KeyState, event: TagEvent, mapping: Mapping) -> Decision:
    """Pure: what to do with a (non-echo) event given the key's state."""
    # Equal times (AC stamps whole seconds) go to the later arrival: webhooks mostly come in order.
    if state.ts is not None and state.eid != event.event_id and event.occurred_at < state.ts:
        return Decision(
            stale=True, detail=f"a newer change ({state.src} {state.op}) happened later"
        )
    source, target = event.source, other(event.source)
    ours = state.writes.get(source)
    restore = bool(
        ours
        and ours.op != event.op
        and ours.src_ts < event.occurred_at <= ours.finished + RESTORE_SKEW
    )
    copy_to = target if mapping.allows(source, target) else None
    return Decision(copy_to=copy_to, restore=restore)


@dataclass(frozen=True)
class Result:
    outcome: str
    detail: str = ""
    mapping_id: int | None = None


class SyncEngine:
    """Applies one event under the rules above. Stateless between calls; all state is in Redis."""

    def __init__(
        self,
        *,
        redis: Redis,
        store: Store,
        sides: dict[str, Side],
        resolve_ac_tag: Callable[[str], int | None] | None = None,
        defer: Callable[[Mapping, TagEvent], bool] | None = None,
        echo_skew: float = ECHO_SKEW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.store = store
        self.sides = sides
        self.resolve_ac_tag = resolve_ac_tag
        self.defer = defer  # may take an (add -> AC) write over, to batch it (workers/coalesce.py)
        self.echo_skew = echo_skew
        self.clock = clock
        self.locks = Locks(redis, ttl=LOCK_TTL)

    # -- mapping lookup -------------------------------------------------------------------

    def find_mapping(self, event: TagEvent) -> Mapping | None:
        if event.source == "klcode":
            return self.store.find_by_klcode_tag(event.tag)
        mapping = self.store.find_by_ac_tag_name(event.tag)
        if mapping is None and self.resolve_ac_tag is not None:
            mapping = self._find_renamed_ac_tag(event.tag)
        return mapping

    def _find_renamed_ac_tag(self, name: str) -> Mapping | None:
        """An AC tag renamed since it was mapped still maps: look its id up (cached) by name."""
        key = f"tagsync:ac:tagname:{tag_key(name)}"
        cached = self.redis.get(key)
        if cached is None:
            tag_id = self.resolve_ac_tag(name) if self.resolve_ac_tag else None
            self.redis.set(key, tag_id or 0, ex=AC_TAG_NAME_TTL)
        else:
            tag_id = int(cached) or None
        if not tag_id:
            return None
        mapping = self.store.find_by_ac_tag_id(tag_id)
        if mapping is not None and tag_key(mapping.ac_tag_name) != tag_key(name):
            log.info(
                "AC tag %s was renamed %r -> %r; updating mapping %s",
                tag_id,
                mapping.ac_tag_name,
                name,
                mapping.id,
            )
            mapping = self.store.update_mapping(mapping.id, ac_tag_name=name.strip())
        return mapping

    # -- the decision ---------------------------------------------------------------------

    def process(
        self, event: TagEvent, *, mapping: Mapping | None = None, allow_defer: bool = True
    ) -> Result:
        """Decide and apply one event; returns its outcome.

        Raises:
            ContactNotFound: the customer is missing on the side we must write (retry later).
            TransientError / PermanentError: a write failed.
        """
        mapping = mapping or self.find_mapping(event)
        if mapping is None:
            return Result("no_mapping", f"no mapping for {event.source} tag {event.tag!r}")
        with self.lock(mapping.id, event.email):
            state_key = f"tagsync:state:{mapping.id}:{event.email}"
            state = KeyState.from_json(self.redis.get(state_key))
            # A reconciliation reads lists, not webhooks: it can never be an echo of ours.
            if not event.reconcile and self._consume_echo(event, mapping):
                return Result("echo", "our own write, reported back", mapping.id)
            decision = decide(state, event, mapping)
            if decision.stale:
                return Result("stale", decision.detail, mapping.id)
            state.ts, state.op, state.src, state.eid = (
                event.occurred_at,
                event.op,
                event.source,
                event.event_id,
            )
            self._save(state_key, state)
            if not mapping.active:
                return Result("inactive", "mapping is inactive", mapping.id)
            writes: list[tuple[str, str]] = []
            if decision.copy_to:
                writes.append((decision.copy_to, "copy"))
            if decision.restore:
                writes.append((event.source, "restore"))
            if not writes:
                return Result(
                    "direction",
                    f"direction {mapping.direction} does not copy from {event.source}",
                    mapping.id,
                )
            if (
                writes == [("ac", "copy")]
                and event.op == "add"
                and not event.reconcile
                and allow_defer
                and self.defer is not None
                and self.defer(mapping, event)
            ):
                return Result("deferred", "queued for a bulk import", mapping.id)
            changed: list[str] = []
            unchanged: list[str] = []
            missing: ContactNotFound | None = None
            for system, why in writes:
                try:
                    did = self._write(system, mapping, event, state, state_key)
                except ContactNotFound as exc:
                    missing = exc
                    continue
                (changed if did else unchanged).append(f"{why} {event.op} -> {system}")
            if missing is not None:
                raise missing
        if changed:
            return Result("applied", "; ".join(changed + unchanged), mapping.id)
        return Result("already_in_sync", "; ".join(unchanged) + " (nothing to change)", mapping.id)

    def _write(
        self, system: str, mapping: Mapping, event: TagEvent, state: KeyState, state_key: str
    ) -> bool:
        side = self.sides[system]
        marker = self._mark(system, event.email, side.tag_name(mapping), event.op)
        started = self.clock()
        # If apply raises, the write may or may not have landed: the pending marker stays and
        # still recognises an echo stamped within PENDING_WRITE_WINDOW.
        changed = side.apply(mapping, event.email, event.op)
        finished = self.clock()
        if changed:
            self._settle_marker(marker, finished)
        else:
            self._drop_marker(marker)
        state.writes[system] = Write(
            op=event.op, started=started, finished=finished, src_ts=event.occurred_at
        )
        self._save(state_key, state)
        log.info(
            "%s %s %r for %s: %s",
            system,
            event.op,
            side.tag_name(mapping),
            mask_email(event.email),
            "changed" if changed else "already so",
        )
        return changed

    def _save(self, key: str, state: KeyState) -> None:
        self.redis.set(key, state.to_json(), ex=STATE_TTL)

    # -- echo markers ---------------------------------------------------------------------

    def _marker_key(self, system: str, email: str, tag: str) -> str:
        return f"tagsync:echo:{system}:{email}:{tag_key(tag)}"

    def _load_markers(self, key: str) -> list[dict]:
        raw = self.redis.get(key)
        return json.loads(raw) if raw else []

    def _store_markers(self, key: str, markers: list[dict]) -> None:
        if markers:
            self.redis.set(key, json.dumps(markers), ex=ECHO_TTL)
        else:
            self.redis.delete(key)

    def _mark(self, system: str, email: str, tag: str, op: str) -> tuple[str, str]:
        key = self._marker_key(system, email, tag)
        token = uuid.uuid4().hex
        markers = self._load_markers(key)
        now = self.clock()
        markers.append(
            {"op": op, "lo": now - self.echo_skew, "hi": now + PENDING_WRITE_WINDOW, "token": token}
        )
        self._store_markers(key, markers)
        return key, token

    def _settle_marker(self, marker: tuple[str, str], finished: float) -> None:
        key, token = marker
        markers = self._load_markers(key)
        for m in markers:
            if m["token"] == token:
                m["hi"] = finished + self.echo_skew
        self._store_markers(key, markers)

    def _drop_marker(self, marker: tuple[str, str]) -> None:
        key, token = marker
        self._store_markers(key, [m for m in self._load_markers(key) if m["token"] != token])

    def _consume_echo(self, event: TagEvent, mapping: Mapping) -> bool:
        tag = mapping.klcode_tag if event.source == "klcode" else mapping.ac_tag_name
        key = self._marker_key(event.source, event.email, tag)
        markers = self._load_markers(key)
        for i, m in enumerate(markers):
            if m["op"] == event.op and m["lo"] <= event.occurred_at <= m["hi"]:
                del markers[i]  # one write, at most one echo
                self._store_markers(key, markers)
                return True
        return False

    # -- the per-key lock -----------------------------------------------------------------

    def lock(self, mapping_id: int, email: str) -> AbstractContextManager[None]:
        return self.locks.hold(
            f"tagsync:lock:{mapping_id}:{email}",
            wait=LOCK_WAIT,
            what=f"customer lock for mapping {mapping_id}",
        )
