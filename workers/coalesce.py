"""Burst coalescing: while the event queue is backed up, KlCode "tag added" events for contacts
AC is known to have are gathered per mapping and applied through bulk import (250 a request)
instead of one request each. 5,000 adds then cost about 20 requests instead of 5,000, i.e.
seconds instead of 17 minutes at AC's 5 requests/s.

Unloaded, nothing changes: a single event is written at once (lowest latency). Removals are
never coalesced (bulk import cannot remove). Each deferred event still ends in exactly one
sync-log entry, written by the flush that applies it; one the bulk import refuses is queued
again on the one-by-one path, so it stays retryable and replayable.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from mapping_store import Mapping

from .acindex import ACContactIndex
from .events import TagEvent

log = logging.getLogger(__name__)

BACKLOG = 20  # events waiting in the queue before adds are coalesced
COLLECT = 1.0  # seconds a flush waits for its batch to fill
PENDING = "tagsync:bulk:{mid}"  # zset: email -> time of the newest deferred add
EVENTS = "tagsync:bulk:{mid}:events"  # hash: email -> JSON list of deferred events
MAPPINGS = "tagsync:bulk:mappings"  # set: mapping ids that may have deferred adds
SCHEDULED = "tagsync:bulk:{mid}:scheduled"  # set while a flush is queued or running
FLUSH_MARK_TTL = 300  # seconds; a running flush renews it, so only a dead flush's mark expires
FLUSH = "workers.jobs.flush_bulk"


class Coalescer:
    """The engine's `defer` hook: True when it took the (KlCode add -> AC) write over."""

    def __init__(
        self, redis: Redis, index: ACContactIndex, queue_name: str, *, backlog: int = BACKLOG
    ) -> None:
        self.redis = redis
        self.index = index
        self.queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
        self.backlog = backlog

    def __call__(self, mapping: Mapping, event: TagEvent) -> bool:
        if event.source != "klcode" or event.op != "add" or self.queue.count < self.backlog:
            return False
        if self.index.get(event.email) is None:
            return False  # bulk import would create an unknown contact: go one by one
        mid = mapping.id
        # Called under the engine's lock for this (mapping, email): the read-modify-write is safe.
        raw = self.redis.hget(EVENTS.format(mid=mid), event.email)
        pending: list[dict[str, Any]] = json.loads(raw) if raw else []
        pending.append(event.to_dict())
        pipe = self.redis.pipeline()
        pipe.zadd(PENDING.format(mid=mid), {event.email: max(e["occurred_at"] for e in pending)})
        pipe.hset(EVENTS.format(mid=mid), event.email, json.dumps(pending))
        pipe.sadd(MAPPINGS, mid)
        pipe.execute()
        schedule_flush(self.redis, self.queue, mid)
        return True


def schedule_flush(redis: Redis, queue: Queue, mid: int) -> None:
    """Queue one flush per mapping at a time; it keeps the mark until nothing is left."""
    if redis.set(SCHEDULED.format(mid=mid), "1", nx=True, ex=FLUSH_MARK_TTL):
        queue.enqueue(
            FLUSH,
            mid,
            at_front=True,
            job_timeout=3600,
            result_ttl=600,
            retry=Retry(max=3, interval=[5, 30, 120]),
            description=f"bulk-add burst for mapping {mid}",
        )


def finish_flush(redis: Redis, queue_name: str, mid: int) -> None:
    """Drop the mark; if a deferral slipped in after our last look, queue the next flush."""
    redis.delete(SCHEDULED.format(mid=mid))
    if redis.zcard(PENDING.format(mid=mid)):
        schedule_flush(redis, Queue(queue_name, connection=redis, serializer=JSONSerializer), mid)


def keep_mark(redis: Redis, mid: int) -> None:
    redis.expire(SCHEDULED.format(mid=mid), FLUSH_MARK_TTL)


def stranded(redis: Redis, queue: Queue) -> list[int]:
    """Mappings with deferred adds and no flush to apply them (one died); flush queued again."""
    out = []
    for raw in redis.smembers(MAPPINGS):
        mid = int(raw)
        if not redis.zcard(PENDING.format(mid=mid)):
            redis.srem(MAPPINGS, raw)
        elif not redis.exists(SCHEDULED.format(mid=mid)):
            schedule_flush(redis, queue, mid)
            out.append(mid)
    return sorted(out)


def take(redis: Redis, mid: int, limit: int) -> list[tuple[str, float, list[dict[str, Any]]]]:
    """Up to `limit` deferred emails with their events (left in place until `done`)."""
    rows = redis.zrange(PENDING.format(mid=mid), 0, limit - 1, withscores=True)
    if not rows:
        return []
    emails = [e.decode() for e, _ in rows]
    raws = redis.hmget(EVENTS.format(mid=mid), emails)
    return [
        (email, float(score), json.loads(raw) if raw else [])
        for (email, (_, score), raw) in zip(emails, rows, raws, strict=True)
    ]


def done(redis: Redis, mid: int, emails: list[str]) -> None:
    if emails:
        pipe = redis.pipeline()
        pipe.zrem(PENDING.format(mid=mid), *emails)
        pipe.hdel(EVENTS.format(mid=mid), *emails)
        pipe.execute()


def wait_for_batch(redis: Redis, mid: int, size: int) -> None:
    """Let a burst fill the batch: until `size` are pending or COLLECT seconds passed."""
    key = PENDING.format(mid=mid)
    deadline = time.monotonic() + COLLECT
    while time.monotonic() < deadline and redis.zcard(key) < size:
        time.sleep(0.05)
