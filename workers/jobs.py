"""RQ entry points. Only JSON-safe arguments; each job rebuilds what it needs from its context.

Every event ends in exactly one sync-log entry (keyed by its event id, updated across retries):
applied, skipped with a reason, or failed with a reason while the job sits in RQ's failed
registry, replayable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job

from .context import get_context
from .errors import ContactNotFound, PermanentError, SyncError
from .events import TagEvent
from .queueing import mask_email

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    number: int
    final: bool  # RQ will not run the job again
    next_delay: int | None  # seconds until RQ's next run, if any
    job_id: str | None


def _attempt(job: Job | None) -> Attempt:
    if job is None:  # called directly, outside a worker
        return Attempt(1, True, None, None)
    left = job.retries_left or 0
    total = int(job.meta.get("retries", left))
    number = max(1, total - left + 1)
    intervals = job.retry_intervals or []
    delay = intervals[min(number - 1, len(intervals) - 1)] if intervals and left > 0 else None
    return Attempt(number, left <= 0, delay, job.id)


def _no_more_retries() -> None:
    job = get_current_job()
    if job is not None:
        job.retries_left = 0  # a permanent error: straight to the failed registry


def _common(ev: TagEvent, at: Attempt) -> dict[str, Any]:
    return {
        "source": ev.source,
        "event_id": ev.event_id,
        "email": ev.email,
        "tag": ev.tag,
        "op": ev.op,
        "attempts": at.number,
        "job_id": at.job_id,
    }


def process_event(event: dict[str, Any], direct: bool = False) -> dict[str, Any]:
    """Apply one tag event to the other system, or record why not.

    `direct`: never hand the write to the burst coalescer (a retry of one it could not import).
    """
    ctx = get_context()
    ev = TagEvent.from_dict(event)
    at = _attempt(get_current_job())
    common = _common(ev, at)
    try:
        result = ctx.engine.process(ev, allow_defer=not direct)
        if result.outcome == "deferred":
            return {"outcome": "deferred", "detail": result.detail}  # the flush records it
    except ContactNotFound as exc:
        if at.final:
            detail = f"{exc}; gave up after {at.number} attempts"
        else:
            detail = f"{exc}; will look again in {at.next_delay} s"
        ctx.store.record_outcome(outcome="contact_not_found", detail=detail, **common)
        ctx.metrics.outcome(ev.source, "contact_not_found")
        log.info(
            "%s %s: contact_not_found (attempt %d)", ev.event_id, mask_email(ev.email), at.number
        )
        if at.final:
            return {"outcome": "contact_not_found", "detail": detail}
        raise
    except PermanentError as exc:
        ctx.store.record_outcome(
            outcome="failed", detail=f"{exc.reason}: {exc}; replayable", **common
        )
        ctx.metrics.outcome(ev.source, "failed")
        _no_more_retries()
        raise
    except Exception as exc:
        reason = exc.reason if isinstance(exc, SyncError) else type(exc).__name__
        tail = "gave up; replayable" if at.final else f"retrying in {at.next_delay} s"
        ctx.store.record_outcome(outcome="failed", detail=f"{reason}: {exc}; {tail}", **common)
        ctx.metrics.outcome(ev.source, "failed")
        raise
    ctx.store.record_outcome(
        outcome=result.outcome, detail=result.detail, **{**common, "mapping_id": result.mapping_id}
    )
    latency = time.time() - ev.received_at if result.outcome == "applied" else None
    ctx.metrics.outcome(ev.source, result.outcome, latency)
    log.info(
        "%s %s %s %r for %s: %s",
        ev.event_id,
        ev.source,
        ev.op,
        ev.tag,
        mask_email(ev.email),
        result.outcome,
    )
    return {"outcome": result.outcome, "detail": result.detail}


def on_job_failure(job: Job, connection: Any, exc_type: type, exc: BaseException, tb: Any) -> None:
    """Record a job whose worker died under it: the job itself never got to say why."""
    if not issubclass(exc_type, AbandonedJobError):
        return  # process_event recorded its own failure before raising
    ev = TagEvent.from_dict(job.args[0])
    at = _attempt(job)
    tail = "gave up; replayable" if at.final else "retrying"
    get_context().store.record_outcome(
        outcome="failed", detail=f"worker died while applying this event; {tail}", **_common(ev, at)
    )


RECONCILE_SLOT = "tagsync:reconcile:slot"
RECONCILE_SLOT_TTL = 30.0  # seconds; renewed while a reconciliation runs


class SlotBusy(Exception):
    """Another reconciliation holds the deployment's slot; RQ tries again in 15 s."""


def reconcile_mapping(mapping_id: int, dry_run: bool = False) -> dict[str, Any]:
    """Reconcile one mapping (Sync Now or a scheduled run), reporting progress in job meta.

    One reconciliation runs at a time in the whole deployment, so the other workers stay free
    for real-time events; the rate limiter keeps part of AC's budget for them too.
    """
    from .errors import LockTimeout  # noqa: PLC0415
    from .locks import Locks  # noqa: PLC0415
    from .reconcile import AlreadyRunning  # noqa: PLC0415

    ctx = get_context()
    job = get_current_job()

    def progress(p: dict[str, Any]) -> None:
        if job is not None:
            job.meta.update(p)
            job.save_meta()

    try:
        with Locks(ctx.redis, ttl=RECONCILE_SLOT_TTL).hold(
            RECONCILE_SLOT, what="reconciliation slot"
        ):
            report = ctx.reconciler(progress).run(mapping_id, dry_run=dry_run)
    except LockTimeout as exc:
        progress({"phase": "waiting", "detail": "another reconciliation is running"})
        raise SlotBusy(str(exc)) from exc
    except AlreadyRunning as exc:
        _no_more_retries()
        return {"status": "already_running", "detail": str(exc)}
    except Exception:
        _no_more_retries()  # a failed listing is reported, not retried 240 times
        raise
    return {"status": "done", **report.to_dict()}


def flush_bulk(mapping_id: int) -> dict[str, Any]:
    """Apply a burst of deferred KlCode adds to AC through bulk imports (workers/coalesce.py)."""
    from .bulk import BULK_MAX  # noqa: PLC0415
    from .coalesce import finish_flush, keep_mark, take, wait_for_batch  # noqa: PLC0415

    ctx = get_context()
    totals = {"applied": 0, "stale": 0, "requeued": 0, "skipped": 0}
    try:
        while True:
            keep_mark(ctx.redis, mapping_id)
            wait_for_batch(ctx.redis, mapping_id, BULK_MAX)
            rows = take(ctx.redis, mapping_id, BULK_MAX)
            if not rows:
                break
            _flush_rows(ctx, mapping_id, rows, totals)
    finally:
        finish_flush(ctx.redis, ctx.settings.queue_name, mapping_id)
    log.info("bulk flush of mapping %s: %s", mapping_id, totals)
    return totals


def _flush_rows(ctx: Any, mapping_id: int, rows: list[Any], totals: dict[str, int]) -> None:
    from mapping_store import MappingNotFound  # noqa: PLC0415

    from .bulk import BulkAdder, Item  # noqa: PLC0415
    from .coalesce import done  # noqa: PLC0415

    try:
        m = ctx.store.get_mapping(mapping_id)
    except MappingNotFound:
        m = None
    events = {email: [TagEvent.from_dict(e) for e in evs] for email, _, evs in rows}
    if m is None or not m.active or not m.allows("klcode", "ac"):
        outcome = "no_mapping" if m is None else ("inactive" if not m.active else "direction")
        for evs in events.values():
            for ev in evs:
                _record_deferred(
                    ctx, ev, outcome, "the mapping changed before the bulk import", mapping_id
                )
        totals["skipped"] += len(events)
        done(ctx.redis, mapping_id, list(events))
        return
    items = [
        Item(email=email, when=when, event_id=events[email][-1].event_id) for email, when, _ in rows
    ]
    result = BulkAdder(ac=ctx.ac, engine=ctx.engine).add(m, items)
    batch = ",".join(b[:8] for b in result.batches)
    for it in result.applied:
        for ev in events[it.email]:
            _record_deferred(ctx, ev, "applied", f"copy add -> ac (bulk import {batch})", m.id)
    for it in result.stale:
        for ev in events[it.email]:
            _record_deferred(ctx, ev, "stale", "a newer change happened later", m.id)
    for it, _why in result.failed:
        for ev in events[it.email]:
            ctx.events.requeue_direct(ev)  # one by one, with its own retries
    totals["applied"] += len(result.applied)
    totals["stale"] += len(result.stale)
    totals["requeued"] += len(result.failed)
    done(ctx.redis, mapping_id, list(events))


def _record_deferred(ctx: Any, ev: TagEvent, outcome: str, detail: str, mapping_id: int) -> None:
    ctx.store.record_outcome(
        source=ev.source,
        event_id=ev.event_id,
        email=ev.email,
        tag=ev.tag,
        op=ev.op,
        outcome=outcome,
        detail=detail,
        mapping_id=mapping_id,
    )
    ctx.metrics.outcome(
        ev.source, outcome, time.time() - ev.received_at if outcome == "applied" else None
    )
