"""Scheduled reconciliation (mapping `schedule`: hourly or daily) and customer-count refresh.

`tagsync scheduler` calls `tick` every TICK seconds. Any number of schedulers may run: each
tick takes a short Redis lock, and each due run is queued under a job id unique to its time
slot, so a mapping is never queued twice for the same slot.
"""

from __future__ import annotations

import logging
import time

from mapping_store import Mapping, tag_key

from .acindex import ACContactIndex
from .coalesce import stranded
from .context import Context
from .errors import SyncError
from .queueing import enqueue_reconcile

log = logging.getLogger(__name__)

TICK = 30  # seconds between scheduler ticks
PERIODS = {"hourly": 3600, "daily": 86400}  # seconds between scheduled runs
COUNTS_EVERY = 600  # seconds between customer-count refreshes (one KlCode request for all tags)
TICK_LOCK = "tagsync:scheduler:tick"
COUNTS_KEY = "tagsync:scheduler:counts_at"


def due(m: Mapping, now: float) -> bool:
    period = PERIODS.get(m.schedule)
    if not m.active or period is None:
        return False
    return m.last_synced_at is None or now - m.last_synced_at.timestamp() >= period


def tick(ctx: Context, now: float | None = None) -> list[int]:
    """Queue the reconciliations that are due; refresh counts now and then. Returns mapping ids."""
    now = time.time() if now is None else now
    if not ctx.redis.set(TICK_LOCK, "1", nx=True, ex=TICK - 5):
        return []  # another scheduler ticked moments ago
    queued = []
    for m in ctx.store.list_mappings():
        if due(m, now):
            slot = int(now // PERIODS[m.schedule])
            if enqueue_reconcile(ctx.redis, m.id, job_id=f"scheduled-{m.id}-{m.schedule}-{slot}"):
                log.info("scheduled %s reconciliation of mapping %s queued", m.schedule, m.id)
                queued.append(m.id)
    refresh_index(ctx)
    if getattr(ctx, "events", None) is not None:
        stranded(ctx.redis, ctx.events.queue)  # deferred adds whose flush died
    last = float(ctx.redis.get(COUNTS_KEY) or 0)
    if now - last >= COUNTS_EVERY:
        ctx.redis.set(COUNTS_KEY, now)
        refresh_counts(ctx)
    return queued


def refresh_index(ctx: Context) -> int:
    """Keep the AC contact index fresh (a page of changes a minute; a full rebuild daily)."""
    if getattr(ctx, "ac_background", None) is None:
        return 0
    try:
        return ACContactIndex(ctx.redis, ctx.ac_background).refresh()
    except SyncError as exc:
        log.warning("AC contact index not refreshed: %s", exc.reason)
        return 0


def refresh_counts(ctx: Context) -> int:
    """Customer count of every mapped KlCode tag, from one `GET /api/v1/tags`."""
    try:
        counts = {tag_key(name): n for name, n in ctx.klcode.list_tags()}
    except SyncError as exc:
        log.warning("customer counts not refreshed: %s", exc.reason)
        return 0
    updated = 0
    for m in ctx.store.list_mappings():
        if tag_key(m.klcode_tag) in counts:
            ctx.store.record_counts(m.id, customer_count=counts[tag_key(m.klcode_tag)])
            updated += 1
    return updated


def run_forever(ctx: Context) -> None:  # pragma: no cover - a loop
    while True:
        try:
            tick(ctx)
        except Exception:
            log.exception("scheduler tick failed; trying again in %s s", TICK)
        time.sleep(TICK)
