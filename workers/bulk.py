"""Adding one AC tag to many known contacts through `import/bulk_import`, 250 a request.

Shared by reconciliation and by the burst coalescer. Bulk import fires no webhooks (no echo
markers needed) and creates contacts it does not know, so callers send only emails in the AC
contact index. Each email carries the time of the change it copies: one superseded by a newer
change is left out, and if a newer removal is applied while the import runs (our add lands on
top of it), the newest change is applied again afterwards, as the engine does for any write
that overtook one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mapping_store import Mapping, email_key

from .activecampaign import ActiveCampaignClient
from .errors import SyncError
from .events import TagEvent
from .sync import STATE_TTL, KeyState, SyncEngine, Write

log = logging.getLogger(__name__)

BULK_MIN = 10  # AC suggests bulk import from 10 contacts; fewer go one by one
BULK_MAX = 250  # AC's maximum contacts per bulk import request
IMPORT_POLL = 1.0  # seconds between bulk import status checks
IMPORT_TIMEOUT = 900.0  # seconds we wait for AC to finish one bulk import


@dataclass(frozen=True)
class Item:
    email: str
    when: float  # when the change we copy happened
    source: str = "klcode"
    event_id: str = ""


@dataclass
class BulkResult:
    applied: list[Item] = field(default_factory=list)
    stale: list[Item] = field(default_factory=list)
    failed: list[tuple[Item, str]] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)


class BulkAdder:
    def __init__(
        self,
        *,
        ac: ActiveCampaignClient,
        engine: SyncEngine,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ac = ac
        self.engine = engine
        self.redis = engine.redis
        self.clock = clock

    def add(
        self, m: Mapping, items: list[Item], on_batch: Callable[[BulkResult], None] | None = None
    ) -> BulkResult:
        """Tag every item's contact in AC; `on_batch` sees the running result after each import."""
        result = BulkResult()
        for i in range(0, len(items), BULK_MAX):
            chunk = items[i : i + BULK_MAX]
            batch = [it for it in chunk if not self._superseded(m, it)]
            result.stale += [it for it in chunk if it not in batch]
            if not batch:
                continue
            started = self.clock()
            try:
                batch_id = self.ac.bulk_import(
                    [{"email": it.email, "tags": [m.ac_tag_name]} for it in batch]
                )
                refused = self._wait(batch_id)
            except SyncError as exc:
                result.failed += [(it, f"bulk import failed: {exc.reason}") for it in batch]
                continue
            result.batches.append(batch_id)
            finished = self.clock()
            for it in batch:
                if it.email in refused:
                    result.failed.append((it, f"bulk import {batch_id} refused this contact"))
                else:
                    self._record_write(m, it, started, finished)
                    result.applied.append(it)
            if on_batch is not None:
                on_batch(result)
        return result

    def _state_key(self, m: Mapping, email: str) -> str:
        return f"tagsync:state:{m.id}:{email}"

    def _superseded(self, m: Mapping, it: Item) -> bool:
        state = KeyState.from_json(self.redis.get(self._state_key(m, it.email)))
        return state.ts is not None and state.ts > it.when

    def _wait(self, batch_id: str) -> set[str]:
        deadline = time.monotonic() + IMPORT_TIMEOUT
        while True:
            info = self.ac.import_info(batch_id)
            if str(info.get("status", "")).lower() == "completed":
                return {email_key(str(e)) for e in info.get("failure") or []}
            if time.monotonic() > deadline:
                raise SyncError(
                    f"bulk import {batch_id} not completed after {IMPORT_TIMEOUT:.0f} s",
                    reason="import_timeout",
                )
            time.sleep(IMPORT_POLL)

    def _record_write(self, m: Mapping, it: Item, started: float, finished: float) -> None:
        with self.engine.lock(m.id, it.email):
            key = self._state_key(m, it.email)
            state = KeyState.from_json(self.redis.get(key))
            newer = state.ts is not None and state.ts > it.when
            if not newer:
                state.ts, state.op, state.src = it.when, "add", it.source
                state.eid = it.event_id or f"bulk:{it.email}"
            state.writes["ac"] = Write(op="add", started=started, finished=finished, src_ts=it.when)
            self.redis.set(key, state.to_json(), ex=STATE_TTL)
        if newer and state.op == "remove" and state.src and state.eid and state.ts:
            fix = TagEvent(
                source=state.src,  # type: ignore[arg-type]
                event_id=state.eid,
                op="remove",
                email=it.email,
                tag=m.klcode_tag if state.src == "klcode" else m.ac_tag_name,
                occurred_at=state.ts,
                received_at=self.clock(),
                reconcile=True,
            )
            self.engine.process(fix, mapping=m)
