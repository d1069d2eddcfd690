"""The lean ingest path writes exactly the job RQ itself would, and real RQ runs it."""

from __future__ import annotations

import time
import zlib

import fakeredis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from workers.events import TagEvent
from workers.queueing import PER_EVENT_FIELDS, EventQueue, _hset_args

T = time.time()


def event(i: int = 1) -> TagEvent:
    return TagEvent(
        source="klcode",
        event_id=f"kl:e{i}",
        op="add",
        email="jane@x.com",
        tag="VIP",
        occurred_at=T,
        received_at=T,
    )


def test_pushed_job_equals_what_rq_would_write(redis: fakeredis.FakeRedis) -> None:
    q = EventQueue(redis, "tagsync-events", retry_intervals=(20, 90, 360))
    q.push([event()], source="klcode")
    assert q.drain_all() == 1
    (job_id,) = [j.decode() for j in redis.lrange("rq:queue:tagsync-events", 0, -1)]
    stored = {k.decode(): v for k, v in redis.hgetall(f"rq:job:{job_id}").items()}
    reference = _hset_args(q.make_job(event()))
    expected = dict(zip(reference[::2], reference[1::2], strict=True))
    expected = {k: v for k, v in expected.items() if v != ""}  # empty fields are left out
    # RQ compresses `data`; we store it plain, which RQ reads as is (see Job.restore).
    assert stored["data"] == zlib.decompress(expected["data"])
    for key in set(expected) - {"created_at", "enqueued_at", "data"}:
        want = expected[key]
        want = want if isinstance(want, bytes) else str(want).encode()
        assert stored[key] == want, key
    assert set(stored) == set(expected)
    assert set(stored) >= PER_EVENT_FIELDS
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    assert job.func_name == "workers.jobs.process_event"
    assert job.args[0]["event_id"] == "kl:e1" and job.retries_left == 3 and job.meta["retries"] == 3


def test_rq_runs_the_pushed_jobs(redis: fakeredis.FakeRedis, monkeypatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(
        "workers.jobs.process_event", lambda ev, direct=False: seen.append(ev["event_id"])
    )
    q = EventQueue(redis, "tagsync-events")
    q.push([event(1), event(2)], source="klcode")
    q.drain_all()
    queue = Queue("tagsync-events", connection=redis, serializer=JSONSerializer)
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    assert seen == ["kl:e1", "kl:e2"]
