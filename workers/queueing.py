"""Durable, deduplicated ingest, in two steps.

1. The receiver appends each request's events, as one record, to a Redis list (the inbox): one
   RPUSH, shared by the requests received at the same moment. Once it returns, the events are
   as durable as Redis is, and the sender gets its 202.
2. The pump (workers/pump.py, in every worker process, one at a time) runs one Lua script that
   removes the oldest records from the inbox AND, per event, marks the delivery as seen and
   saves and queues its RQ job: all or nothing, so a sender's retry is never dropped as a
   duplicate of an event that was never queued (DESIGN.md section 10), and a pump that dies
   half-way leaves the records in the inbox for the next.

Why two steps: creating the jobs (a dedup key, a job hash, a queue push per event) was most of
the receiver's cost under load; the inbox keeps the receiver's Redis work to one short append,
and moves the rest off the sender's clock. The jobs are ordinary RQ jobs (JSON-serialised), run
by `tagsync worker`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
import zlib
from collections.abc import Sequence
from enum import Enum

from marshmallow import ValidationError
from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now
from rq.utils import utcformat

from .config import DEFAULT_RETRY_INTERVALS
from .directcall import DirectConnection, DirectScript
from .events import TagEvent
from .groupcommit import GroupCommit
from .payloads import parse_klcode

log = logging.getLogger(__name__)

DEDUP_TTL = 7 * 24 * 3600  # seconds a delivery id is remembered (KlCode and AC retry within hours)
JOB_TIMEOUT = 300  # seconds one event job may run (HTTP retries and rate-limit waits included)
RESULT_TTL = 3600  # seconds a finished job is kept for the dashboard
FAILURE_TTL = 30 * 24 * 3600  # seconds a failed job stays replayable
LAST_WEBHOOK_KEY = "tagsync:last_webhook:{source}"
WEBHOOK_METRICS = "tagsync:m:webhooks"  # workers/metrics.py reads it
MAX_WRITE = 2000  # events in one ingest call (a KlCode batch is at most 1000)
PROCESS_EVENT = "workers.jobs.process_event"
ON_FAILURE = "workers.jobs.on_job_failure"

INBOX_KEY = "tagsync:inbox:{queue}"  # received events, waiting for the pump
DEAD_KEY = "tagsync:inbox:{queue}:dead"  # inbox records the pump could not read (kept, logged)
RECORD_VERSION = 1  # first element of an events record; a web/worker version skew shows up
RAW_VERSION = 2  # first element of a raw record's header line (a KlCode body as it came)
COMPRESS_OVER = 2048  # bytes: raw bodies larger than this are stored deflated
DRAIN_RECORDS = 200  # inbox records one drain reads (and at most MAX_WRITE events)

_INGEST = """
-- KEYS[1] rq:queues, KEYS[2] queue key, KEYS[3] metrics hash, KEYS[4] and KEYS[5] the
-- last-webhook keys of klcode and ac, KEYS[6] the inbox, KEYS[7] its dead-letter list, then per
-- event: KEYS[6+2i] dedup key, KEYS[7+2i] job key.
-- ARGV[1] queue key, ARGV[2] dedup ttl, ARGV[3] now, ARGV[4] the job fields every event shares
-- (a JSON list of field, value, ...), ARGV[5] created/enqueued stamp, ARGV[6] how many inbox
-- records this call consumes, ARGV[7] the first of them as read, ARGV[8] how many of them are
-- unreadable (D), then those D records, then per event: its source, job id, data, description.
-- If the inbox no longer starts with the record read, another pump got there first: do nothing.
if redis.call('LINDEX', KEYS[6], 0) ~= ARGV[7] then return false end
redis.call('LTRIM', KEYS[6], tonumber(ARGV[6]), -1)
local dead = tonumber(ARGV[8])
for d = 1, dead do redis.call('RPUSH', KEYS[7], ARGV[8 + d]) end
redis.call('SADD', KEYS[1], ARGV[1])
local fields = cjson.decode(ARGV[4])
local n = #fields
fields[n + 1], fields[n + 2] = 'created_at', ARGV[5]
fields[n + 3], fields[n + 4] = 'enqueued_at', ARGV[5]
fields[n + 5], fields[n + 7] = 'data', 'description'
local ttl = tonumber(ARGV[2])
local out, counts, seen = {}, {}, {}
local a = 9 + dead
for k = 8, #KEYS, 2 do
  local source, job_id = ARGV[a], ARGV[a + 1]
  local outcome = 'duplicate'
  if redis.call('SET', KEYS[k], job_id, 'NX', 'EX', ttl) then
    fields[n + 6], fields[n + 8] = ARGV[a + 2], ARGV[a + 3]
    redis.call('HSET', KEYS[k + 1], unpack(fields))
    redis.call('RPUSH', KEYS[2], job_id)
    outcome = 'accepted'
  end
  out[#out + 1] = outcome == 'accepted' and 1 or 0
  local metric = source .. '|' .. outcome .. '|'
  counts[metric] = (counts[metric] or 0) + 1
  seen[source] = true
  a = a + 4
end
for metric, count in pairs(counts) do redis.call('HINCRBY', KEYS[3], metric, count) end
if seen['klcode'] then redis.call('SET', KEYS[4], ARGV[3]) end
if seen['ac'] then redis.call('SET', KEYS[5], ARGV[3]) end
return out
"""


PER_EVENT_FIELDS = frozenset({"data", "description", "created_at", "enqueued_at"})
JOB_KEY_PREFIX = Job.redis_job_namespace_prefix


def describe(event: TagEvent) -> str:
    """The job's description (RQ logs it): no full email."""
    return (
        f"{event.source} {event.op} {event.tag!r} for {mask_email(event.email)} [{event.event_id}]"
    )


DEDUP_PREFIX = "tagsync:seen:"


def dedup_key(event_id: str) -> str:
    return DEDUP_PREFIX + event_id


def mask_email(email: str) -> str:
    """j***@example.com: enough to recognise a customer in logs, not enough to harvest."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def _hset_args(job: Job) -> list[str | bytes | int | float]:
    out: list[str | bytes | int | float] = []
    for key, value in job.to_dict().items():
        if value is None:
            continue
        out.append(key)
        if isinstance(value, Enum):
            out.append(str(value.value))
        elif isinstance(value, (bytes, str, int, float)):
            out.append(value)
        else:
            out.append(str(value))
    return out


class EventQueue:
    """Puts events on the RQ queue exactly once per delivery id."""

    def __init__(
        self,
        redis: Redis,
        queue_name: str,
        *,
        dedup_ttl: int = DEDUP_TTL,
        retry_intervals: tuple[int, ...] = DEFAULT_RETRY_INTERVALS,
    ) -> None:
        self.redis = redis
        self.retry_intervals = list(retry_intervals)
        self._shared: str | None = None
        self.queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
        self.dedup_ttl = dedup_ttl
        self.inbox_key = INBOX_KEY.format(queue=queue_name)
        self.dead_key = DEAD_KEY.format(queue=queue_name)
        self._direct = DirectConnection(redis)
        self._script = DirectScript(redis, _INGEST)
        self._fixed_keys = (  # the ingest script's KEYS[1..7]
            self.queue.redis_queues_keys,
            self.queue.key,
            WEBHOOK_METRICS,
            LAST_WEBHOOK_KEY.format(source="klcode"),
            LAST_WEBHOOK_KEY.format(source="ac"),
            self.inbox_key,
            self.dead_key,
        )
        self._group: GroupCommit[str | bytes, None] = GroupCommit(self._append, max_size=MAX_WRITE)

    def make_job(self, event: TagEvent, *, direct: bool = False) -> Job:
        job = Job.create(
            PROCESS_EVENT,
            args=[event.to_dict(), True] if direct else [event.to_dict()],
            connection=self.redis,
            serializer=JSONSerializer,
            id=uuid.uuid4().hex,
            timeout=JOB_TIMEOUT,
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            retry=Retry(max=len(self.retry_intervals), interval=self.retry_intervals)
            if self.retry_intervals
            else None,
            on_failure=Callback(ON_FAILURE),
            description=describe(event),
            origin=self.queue.name,
            meta={"retries": len(self.retry_intervals)},  # the event is in args
        )
        job.enqueued_at = rq_now()
        job._status = JobStatus.QUEUED  # what Queue.enqueue_job sets before saving
        return job

    def requeue_direct(self, event: TagEvent) -> Job:
        """Queue an already-accepted event again, to be applied one by one (never coalesced)."""
        return self.queue.enqueue_job(self.make_job(event, direct=True))

    def _shared_fields(self) -> str:
        """The job fields every event's job has in common, computed once from a real RQ job,
        as one JSON argument (cheaper to send than forty)."""
        if self._shared is None:
            probe = TagEvent(
                source="klcode",
                event_id="probe",
                op="add",
                email="p@x",
                tag="t",
                occurred_at=0.0,
                received_at=0.0,
            )
            fields = _hset_args(self.make_job(probe))
            pairs = dict(zip(fields[::2], fields[1::2], strict=True))
            # Empty fields (started_at, worker_name...) are left out: RQ reads missing as empty.
            shared = [
                x for k, v in pairs.items() if k not in PER_EVENT_FIELDS and v != "" for x in (k, v)
            ]
            self._shared = json.dumps(
                [x.decode() if isinstance(x, bytes) else str(x) for x in shared]
            )
        return self._shared

    def push(self, events: Sequence[TagEvent], *, source: str) -> None:
        """Make the events durable in the inbox: one record, in one round trip shared with the
        requests being received at the same moment in this process (workers/groupcommit.py).

        The pump (`drain`) turns records into RQ jobs, deduplicated by delivery id; the receiver
        only appends, which keeps its Redis work to one RPUSH however the events fare later.

        Raises:
            redis.RedisError: nothing was made durable (or, on a timeout, we cannot know);
                the caller answers 503 and the sender's retry is deduplicated by the pump.
        """
        if not events:
            self.redis.set(LAST_WEBHOOK_KEY.format(source=source), f"{time.time():.3f}")
            return
        # The random id keeps every record unique: the pump's "nobody drained before me" check
        # compares the inbox's first record with the one it read.
        record = json.dumps(
            [RECORD_VERSION, os.urandom(8).hex(), [event.to_dict() for event in events]]
        )
        self._group.submit(record, len(events))

    def push_raw(self, body: bytes, count: int, *, received_at: float) -> None:
        """Make a KlCode body durable as it came, `count` tag events in it, already checked
        (webhooks/fastcheck.py); the pump reads it with the same marshmallow code as `push`'s
        callers. Saves building and encoding every event on the request's clock.

        Raises:
            redis.RedisError: as `push`.
        """
        encoding = "identity"
        if len(body) > COMPRESS_OVER:
            # Batches repeat themselves (keys, tag, domains): 19 KB of 100 events deflate to
            # ~1.2 KB in ~15 us, far less than sending 19 KB and writing it to the AOF costs.
            packer = zlib.compressobj(1, zlib.DEFLATED, -15)
            body, encoding = packer.compress(body) + packer.flush(), "deflate"
        head = json.dumps([RAW_VERSION, os.urandom(8).hex(), "klcode", received_at, encoding])
        self._group.submit(head.encode() + b"\n" + body, count)

    def _append(self, records: Sequence[str | bytes]) -> list[None]:
        # Repeated after a dropped connection, a record may land twice: its events then come
        # out of the pump as duplicates, never as two jobs.
        self._direct.command("RPUSH", self.inbox_key, *records)
        return [None] * len(records)

    def inbox_size(self) -> int:
        return int(self.redis.llen(self.inbox_key))

    def wait_for_inbox(self, timeout: float) -> bool:
        """Block until the inbox holds a record (True) or `timeout` seconds pass (False).

        BLMOVE from the list's head to its head is a blocking peek: it moves nothing."""
        peeked = self.redis.blmove(self.inbox_key, self.inbox_key, timeout, "LEFT", "LEFT")
        return peeked is not None

    def drain(self, *, max_events: int = MAX_WRITE) -> int | None:
        """Turn the oldest inbox records into RQ jobs, atomically with removing them from the
        inbox; a delivery id seen before becomes a counted duplicate, not a second job.

        Returns how many events it took (0: the inbox is empty), or None if another pump
        drained those records first (nothing was done; call again).
        """
        raw = self.redis.lrange(self.inbox_key, 0, DRAIN_RECORDS - 1)
        if not raw:
            return 0
        taken: list[TagEvent] = []
        dead: list[bytes] = []
        consumed = 0
        for record in raw:
            try:
                events = read_record(record)
            except UnreadableRecord as exc:
                log.error("unreadable inbox record moved to %s: %s", self.dead_key, exc)
                dead.append(record)
                continue
            taken += events
            consumed += 1
            if len(taken) >= max_events:
                break
        consumed += len(dead)
        flags = self._write(taken, consumed=consumed, head=raw[0], dead=dead)
        return None if flags is None else len(taken)

    def drain_all(self) -> int:
        """Drain until the inbox is empty (tests, `tagsync worker --burst`): events taken."""
        total = 0
        while (moved := self.drain()) != 0:
            total += moved or 0
        return total

    def _write(
        self,
        events: Sequence[TagEvent],
        *,
        consumed: int,
        head: bytes,
        dead: Sequence[bytes],
    ) -> list[bool] | None:
        now = time.time()
        keys = list(self._fixed_keys)
        args: list[str | bytes | int] = [
            self.queue.key,
            self.dedup_ttl,
            f"{now:.3f}",
            self._shared_fields(),
            utcformat(rq_now()),
            consumed,
            head,
            len(dead),
            *dead,
        ]
        for event in events:
            job_id = os.urandom(16).hex()  # as random as uuid4().hex, a fifth of the cost
            keys += (DEDUP_PREFIX + event.event_id, JOB_KEY_PREFIX + job_id)
            # `data` as RQ's JSON serializer writes it, but uncompressed: RQ reads plain
            # data as is (Job.restore), and zlib's set-up cost more than building the rest.
            data = json.dumps([PROCESS_EVENT, None, [event.to_dict()], {}])
            args += (event.source, job_id, data, describe(event))
        flags = self._script(keys, args)
        if flags is None:
            return None
        return [bool(x) for x in flags]  # type: ignore[union-attr]


class UnreadableRecord(Exception):
    """An inbox record no reader of this version can turn into events; the message names the
    kind of failure only (a payload's values, emails included, never reach the log)."""


def read_record(record: bytes) -> list[TagEvent]:
    """The events of one inbox record, either kind.

    Raises:
        UnreadableRecord: malformed, another format version, or refused by the schemas.
    """
    try:
        return _read_record(record)
    except UnreadableRecord:
        raise
    except (
        ValueError,  # JSON, float(), unknown version or encoding
        TypeError,
        KeyError,
        ValidationError,
        RecursionError,
        zlib.error,
    ) as exc:
        raise UnreadableRecord(type(exc).__name__) from None


def _read_record(record: bytes) -> list[TagEvent]:
    head, newline, body = record.partition(b"\n")
    if newline:  # a raw body: JSON events records never hold a newline (json.dumps escapes it)
        version, _, source, received_at, encoding = json.loads(head)
        if version != RAW_VERSION or source != "klcode":
            raise UnreadableRecord(f"raw record version {version} for {source!r}")
        if encoding == "deflate":
            body = zlib.decompress(body, -15)
        elif encoding != "identity":
            raise UnreadableRecord(f"raw record encoding {encoding!r}")
        return parse_klcode(json.loads(body), received_at=float(received_at)).events
    version, _, items = json.loads(record)
    if version != RECORD_VERSION:
        raise UnreadableRecord(f"record version {version}, not {RECORD_VERSION}")
    return [TagEvent.from_dict(item) for item in items]


RECONCILE_QUEUE = "tagsync-reconcile"
RECONCILE = "workers.jobs.reconcile_mapping"
RECONCILE_TIMEOUT = 6 * 3600  # seconds: a 50,000-contact mapping at 5 requests/s takes hours
SLOT_RETRY = Retry(max=240, interval=15)  # waiting for the deployment's reconciliation slot


def reconcile_queue(redis: Redis) -> Queue:
    return Queue(RECONCILE_QUEUE, connection=redis, serializer=JSONSerializer)


def enqueue_reconcile(
    redis: Redis, mapping_id: int, *, dry_run: bool = False, job_id: str | None = None
) -> Job | None:
    """Queue a reconciliation; None if `job_id` is given and already queued (scheduled runs)."""
    from rq.exceptions import DuplicateJobError  # noqa: PLC0415

    try:
        return reconcile_queue(redis).enqueue(
            RECONCILE,
            mapping_id,
            dry_run,
            job_id=job_id,
            unique=job_id is not None,
            job_timeout=RECONCILE_TIMEOUT,
            result_ttl=7 * 24 * 3600,
            failure_ttl=FAILURE_TTL,
            retry=SLOT_RETRY,
            description=f"reconcile mapping {mapping_id}{' (dry run)' if dry_run else ''}",
            meta={"mapping_id": mapping_id, "dry_run": dry_run, "phase": "queued"},
        )
    except DuplicateJobError:
        return None


def last_webhook_at(redis: Redis, source: str) -> float | None:
    raw = redis.get(LAST_WEBHOOK_KEY.format(source=source))
    return float(raw) if raw else None


def queue_depths(redis: Redis, queue_names: Sequence[str]) -> dict[str, int]:
    """Jobs per queue and registry ("<queue>|queued", "|started", "|scheduled", "|failed"),
    and "<queue>|inbox": webhook requests received whose events are not jobs yet (it grows
    only while no worker, and so no pump, runs)."""
    out: dict[str, int] = {}
    for name in queue_names:
        q = Queue(name, connection=redis, serializer=JSONSerializer)
        out[f"{name}|inbox"] = int(redis.llen(INBOX_KEY.format(queue=name)))
        out[f"{name}|queued"] = q.count
        out[f"{name}|started"] = q.started_job_registry.count
        out[f"{name}|scheduled"] = q.scheduled_job_registry.count
        out[f"{name}|failed"] = q.failed_job_registry.count
    return out
