"""Reconciliation ("Sync Now" and scheduled syncs): compare who holds a tag on each side and fix
the difference in the allowed direction(s). See workers/plan.py for the rules.

Every per-customer change goes through the same sync engine as real-time events, as an event
stamped with the time its side was listed: so a real-time change made after the listing wins
(the ordering guard), our writes set echo markers, and each change gets a sync-log entry.
Larger sets of AC additions for contacts AC is known to have go through bulk import (250 a
request, no webhooks); everything uses the shared AC rate limit at background priority, so
real-time events never wait behind a reconciliation.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis

from mapping_store import Mapping, Store, email_key

from .acindex import ACContactIndex
from .activecampaign import ActiveCampaignClient
from .bulk import BULK_MIN, BulkAdder, BulkResult, Item
from .errors import ContactNotFound, SyncError
from .events import TagEvent
from .klcode import TAG_CUSTOMERS_PAGE, KlCodeClient
from .locks import Locks
from .plan import Plan, plan
from .sync import SyncEngine

log = logging.getLogger(__name__)

LOCK_TTL = 30.0  # seconds; renewed while the reconciliation runs
PROGRESS_EVERY = 0.5  # seconds between progress reports


class AlreadyRunning(Exception):
    pass


def base_key(mapping: Mapping) -> str:
    # Keyed by creation time too: a new mapping that reuses a deleted one's id starts afresh.
    return f"tagsync:base:{mapping.id}:{int(mapping.created_at.timestamp())}"


@dataclass
class Report:
    mapping_id: int
    run_id: str
    dry_run: bool
    plan: dict[str, Any] = field(default_factory=dict)
    klcode_holders: int = 0
    ac_holders: int = 0
    added_ac: int = 0
    removed_ac: int = 0
    added_klcode: int = 0
    removed_klcode: int = 0
    unchanged: int = 0
    not_found: int = 0
    stale: int = 0
    failed: int = 0
    bulk_batches: int = 0
    ac_requests: int = 0
    klcode_requests: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return self.added_ac + self.removed_ac + self.added_klcode + self.removed_klcode

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reconciler:
    def __init__(
        self,
        *,
        redis: Redis,
        store: Store,
        ac: ActiveCampaignClient,
        klcode: KlCodeClient,
        engine: SyncEngine,
        progress: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.store = store
        self.ac = ac
        self.klcode = klcode
        self.engine = engine
        self.index = ACContactIndex(redis, ac)
        self.locks = Locks(redis, ttl=LOCK_TTL)
        self.progress = progress
        self.clock = clock
        self._progress: dict[str, Any] = {}
        self._done: set[str] = set()  # emails whose planned change is confirmed in this run
        self._last_report = 0.0

    def _report(self, force: bool = False, **fields: Any) -> None:
        self._progress.update(fields)
        now = time.monotonic()
        if self.progress is not None and (force or now - self._last_report >= PROGRESS_EVERY):
            self._last_report = now
            self.progress(dict(self._progress))

    def run(self, mapping_id: int, *, dry_run: bool = False) -> Report:
        """Reconcile one mapping.

        Raises:
            AlreadyRunning: another reconciliation of this mapping holds its lock.
            MappingNotFound, SyncError: the mapping is gone, or a listing failed.
        """
        mapping = self.store.get_mapping(mapping_id)
        key = f"tagsync:reconcile:lock:{mapping.id}"
        if self.redis.exists(key):
            raise AlreadyRunning(f"a reconciliation of mapping {mapping.id} is already running")
        with self.locks.hold(key, what=f"reconciliation of mapping {mapping.id}"):
            return self._run(mapping, dry_run)

    def _run(self, m: Mapping, dry_run: bool) -> Report:
        started = time.monotonic()
        self._done = set()
        ac_before, kl_before = self.ac.request_count, self.klcode.request_count
        report = Report(mapping_id=m.id, run_id=uuid.uuid4().hex[:12], dry_run=dry_run)
        self._report(force=True, phase="listing", pages=0, planned=0, applied=0)
        t_kl = self.clock()
        kl = self._klcode_holders(m)
        t_ac = self.clock()
        ac = self._ac_holders(m)
        report.klcode_holders, report.ac_holders = len(kl), len(ac)
        raw_base = self.redis.smembers(base_key(m))
        base = {b.decode() for b in raw_base} if raw_base else None
        p = plan(m.direction, klcode=set(kl), ac=set(ac), base=base)
        report.plan = p.summary()
        if p.first_run:
            report.notes.append("first bidirectional run: no base yet, so only additions were made")
        self._report(force=True, phase="planned", planned=p.actions)
        if not dry_run:
            self._apply(m, p, report, kl_ids=kl, t_kl=t_kl, t_ac=t_ac)
            if m.direction == "bidirectional":
                self._save_base(m, kl, ac, p, report)
            count = len(kl) + report.added_klcode - report.removed_klcode
            self.store.record_counts(m.id, customer_count=count, synced=True)
        report.ac_requests = self.ac.request_count - ac_before
        report.klcode_requests = self.klcode.request_count - kl_before
        report.seconds = round(time.monotonic() - started, 3)
        if not dry_run:
            self._log_summary(m, report)
        self._report(force=True, phase="done", applied=report.changes)
        return report

    # -- listing --------------------------------------------------------------------------

    def _klcode_holders(self, m: Mapping) -> dict[str, int]:
        out: dict[str, int] = {}
        page = 1
        while True:
            customers, total = self.klcode.tag_customers(
                m.klcode_tag, page=page, per_page=TAG_CUSTOMERS_PAGE
            )
            out.update({email_key(c.email): c.id for c in customers})
            self._report(pages=self._progress.get("pages", 0) + 1)
            if not customers or page * TAG_CUSTOMERS_PAGE >= total:
                return out
            page += 1

    def _ac_holders(self, m: Mapping) -> dict[str, int]:
        out: dict[str, int] = {}
        for n, (cid, email) in enumerate(self.ac.contacts_with_tag(m.ac_tag_id), start=1):
            out[email_key(email)] = cid
            if n % 100 == 0:
                self._report(pages=self._progress.get("pages", 0) + 1)
        if out:  # we learnt these contact ids for free
            self.redis.hset("tagsync:ac:index", mapping=out)
        return out

    # -- applying -------------------------------------------------------------------------

    def _apply(
        self,
        m: Mapping,
        p: Plan,
        report: Report,
        *,
        kl_ids: dict[str, int],
        t_kl: float,
        t_ac: float,
    ) -> None:
        adds_ac = sorted(p.add_ac)
        if len(adds_ac) >= BULK_MIN:
            self.index.refresh()
            known = self.index.lookup(adds_ac)
            if len(known) >= BULK_MIN:
                self._bulk_add(m, sorted(known), report, t_kl)
                adds_ac = [e for e in adds_ac if e not in known]
        # KlCode listed the holders with their ids: removals there need no lookup.
        for email, cid in kl_ids.items():
            if email in p.remove_klcode:
                self.redis.set(f"tagsync:kl:customer:{email}", cid, ex=24 * 3600)
        steps = [
            (adds_ac, "klcode", "add", t_kl),
            (sorted(p.remove_ac), "klcode", "remove", t_kl),
            (sorted(p.add_klcode), "ac", "add", t_ac),
            (sorted(p.remove_klcode), "ac", "remove", t_ac),
        ]
        for emails, source, op, when in steps:
            for email in emails:
                self._one(m, report, email=email, source=source, op=op, when=when)

    def _one(
        self, m: Mapping, report: Report, *, email: str, source: str, op: str, when: float
    ) -> None:
        """One customer through the sync engine, as a change seen in `source` at listing time."""
        event = TagEvent(
            source=source,  # type: ignore[arg-type]
            event_id=f"rc:{report.run_id}:{source}:{op}:{email}",
            op=op,  # type: ignore[arg-type]
            email=email,
            tag=m.klcode_tag if source == "klcode" else m.ac_tag_name,
            occurred_at=when,
            received_at=self.clock(),
            reconcile=True,
        )
        target = "ac" if source == "klcode" else "klcode"
        try:
            result = self.engine.process(event, mapping=m)
            outcome, detail = result.outcome, result.detail
        except ContactNotFound as exc:
            outcome, detail = "contact_not_found", str(exc)
        except SyncError as exc:
            outcome, detail = "failed", f"{exc.reason}: {exc}"
            log.warning("reconcile %s: %s for one customer failed: %s", m.id, op, exc.reason)
        if outcome in ("applied", "already_in_sync"):
            self._done.add(email)
        if outcome == "applied":
            name = f"{'added' if op == 'add' else 'removed'}_{target}"
            setattr(report, name, getattr(report, name) + 1)
        elif outcome == "contact_not_found":
            report.not_found += 1
        elif outcome == "stale":
            report.stale += 1
        elif outcome == "failed":
            report.failed += 1
        else:
            report.unchanged += 1
        self.store.record_outcome(
            source="reconcile",
            event_id=event.event_id,
            email=email,
            mapping_id=m.id,
            tag=event.tag,
            op=op,
            outcome=outcome,
            detail=f"{target}: {detail}",
        )
        self._report(applied=self._progress.get("applied", 0) + 1)

    def _bulk_add(self, m: Mapping, emails: list[str], report: Report, t_kl: float) -> None:
        """Add the AC tag to known contacts through bulk import (see workers/bulk.py)."""
        items = [
            Item(email=e, when=t_kl, event_id=f"rc:{report.run_id}:klcode:add:{e}") for e in emails
        ]
        done = 0

        def on_batch(r: BulkResult) -> None:
            nonlocal done
            new = r.applied[done:]
            done = len(r.applied)
            self._report(applied=self._progress.get("applied", 0) + len(new))

        result = BulkAdder(ac=self.ac, engine=self.engine, clock=self.clock).add(m, items, on_batch)
        report.bulk_batches += len(result.batches)
        report.added_ac += len(result.applied)
        report.stale += len(result.stale)
        report.failed += len(result.failed)
        self._done.update(it.email for it in result.applied)
        entries = [
            self._bulk_entry(m, it.event_id, it.email, "applied", "ac: added by bulk import")
            for it in result.applied
        ]
        entries += [
            self._bulk_entry(m, it.event_id, it.email, "stale", "a newer change came first")
            for it in result.stale
        ]
        entries += [
            self._bulk_entry(m, it.event_id, it.email, "failed", why) for it, why in result.failed
        ]
        self.store.record_many(entries)

    def _bulk_entry(
        self, m: Mapping, event_id: str, email: str, outcome: str, detail: str
    ) -> dict[str, Any]:
        return {
            "source": "reconcile",
            "event_id": event_id,
            "email": email,
            "mapping_id": m.id,
            "tag": m.klcode_tag,
            "op": "add",
            "outcome": outcome,
            "detail": detail,
        }

    # -- bookkeeping ----------------------------------------------------------------------

    def _save_base(
        self, m: Mapping, kl: dict[str, int], ac: dict[str, int], p: Plan, report: Report
    ) -> None:
        """What both sides now agree on, as the base of the next three-way comparison.

        Only confirmed state goes in: an email that failed or was skipped stays out, so the next
        run sees it as "added on one side" and tries again, rather than as a removal.
        """
        done = self._done
        both = (set(kl) & set(ac)) | ((p.add_ac | p.add_klcode) & done)
        both -= (p.remove_ac | p.remove_klcode) & done
        key, tmp = base_key(m), f"{base_key(m)}:new"
        pipe = self.redis.pipeline()
        pipe.delete(tmp)
        members = sorted(both)
        for i in range(0, len(members), 5000):
            pipe.sadd(tmp, *members[i : i + 5000])
        if members:
            pipe.rename(tmp, key)
        else:
            pipe.delete(key)
            pipe.sadd(key, "")  # an empty base is still a base (not a first run)
        pipe.execute()

    def _log_summary(self, m: Mapping, report: Report) -> None:
        detail = (
            f"reconciliation: +{report.added_ac}/-{report.removed_ac} in AC, "
            f"+{report.added_klcode}/-{report.removed_klcode} in KlCode, "
            f"{report.not_found} not found, {report.stale} superseded, {report.failed} failed, "
            f"{report.bulk_batches} bulk imports, "
            f"{report.ac_requests} AC requests, {report.seconds:.1f} s"
        )
        if report.notes:
            detail += "; " + "; ".join(report.notes)
        self.store.record_outcome(
            source="reconcile",
            event_id=f"rc:{report.run_id}",
            mapping_id=m.id,
            tag=m.klcode_tag,
            outcome="applied" if report.changes else "already_in_sync",
            detail=detail,
        )
