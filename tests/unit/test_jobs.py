"""Jobs through real RQ (SimpleWorker on fakeredis) and real clients (HTTP faked by `responses`)."""

from __future__ import annotations

import time

import fakeredis
import pytest
import responses
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from mapping_store import Store
from workers.config import Settings
from workers.context import Context, set_context
from workers.events import TagEvent
from workers.queueing import EventQueue

AC = "http://ac.test"
KL = "http://kl.test"


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda s: None)


@pytest.fixture
def ctx(redis: fakeredis.FakeRedis, store: Store):
    settings = Settings(
        ac_api_url=AC, klcode_api_url=KL, ac_api_token="t", klcode_api_key="k", ac_rate_limit=1000
    )
    context = Context.build(settings, redis=redis, store=store)
    set_context(context)
    store.create_mapping(klcode_tag="VIP Customer", ac_tag_id=64, ac_tag_name="VIP Customer")
    yield context
    set_context(None)


def event(i: int = 1, op: str = "add", email: str = "jane@x.com") -> TagEvent:
    now = time.time()
    return TagEvent(
        source="klcode",
        event_id=f"kl:evt_{i}",
        op=op,
        email=email,
        tag="VIP Customer",
        occurred_at=now,
        received_at=now,
    )  # type: ignore[arg-type]


def drain(redis: fakeredis.FakeRedis) -> Queue:
    EventQueue(redis, "tagsync-events").drain_all()  # the pump's step: inbox -> RQ jobs
    queue = Queue("tagsync-events", connection=redis, serializer=JSONSerializer)
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    return queue


@responses.activate
def test_event_applied_and_logged_once(
    ctx: Context, redis: fakeredis.FakeRedis, store: Store
) -> None:
    responses.get(
        f"{AC}/api/3/contacts",
        json={"contacts": [{"id": "9", "email": "jane@x.com"}], "meta": {"total": "1"}},
    )
    responses.post(
        f"{AC}/api/3/contactTags",
        status=201,
        json={"contactTag": {"id": "77", "contact": "9", "tag": "64"}},
    )
    EventQueue(redis, "tagsync-events").push([event()], source="klcode")
    drain(redis)
    (entry,) = store.sync_log()
    assert (entry.event_id, entry.outcome, entry.attempts) == ("kl:evt_1", "applied", 1)
    # The contactTag id was remembered: removing costs one DELETE, nothing else.
    responses.delete(f"{AC}/api/3/contactTags/77", json={})
    EventQueue(redis, "tagsync-events").push([event(2, "remove")], source="klcode")
    drain(redis)
    assert [c.request.method for c in responses.calls] == ["GET", "POST", "DELETE"]


@responses.activate
def test_permanent_error_fails_without_retry(
    ctx: Context, redis: fakeredis.FakeRedis, store: Store
) -> None:
    responses.get(f"{AC}/api/3/contacts", status=403, json={"message": "bad token"})
    EventQueue(redis, "tagsync-events").push([event()], source="klcode")
    queue = drain(redis)
    assert queue.failed_job_registry.count == 1
    assert len(queue.scheduled_job_registry) == 0
    (entry,) = store.sync_log()
    assert entry.outcome == "failed" and "replayable" in entry.detail


@responses.activate
def test_transient_error_is_scheduled_for_retry(
    ctx: Context, redis: fakeredis.FakeRedis, store: Store
) -> None:
    responses.get(f"{AC}/api/3/contacts", status=503)
    EventQueue(redis, "tagsync-events").push([event()], source="klcode")
    queue = drain(redis)
    assert len(queue.scheduled_job_registry) == 1  # RQ's delayed retry
    (entry,) = store.sync_log()
    assert entry.outcome == "failed" and "retrying" in entry.detail
    assert len(responses.calls) == 3  # tenacity's attempts inside the job


@responses.activate
def test_contact_not_found_is_recorded_and_retried(
    ctx: Context, redis: fakeredis.FakeRedis, store: Store
) -> None:
    responses.get(f"{AC}/api/3/contacts", json={"contacts": [], "meta": {"total": "0"}})
    EventQueue(redis, "tagsync-events").push([event()], source="klcode")
    queue = drain(redis)
    (entry,) = store.sync_log()
    assert entry.outcome == "contact_not_found" and "will look again" in entry.detail
    assert len(queue.scheduled_job_registry) == 1


def test_duplicate_delivery_enqueued_once(redis: fakeredis.FakeRedis) -> None:
    q = EventQueue(redis, "tagsync-events")
    q.push([event(1), event(2)], source="klcode")
    q.push([event(2), event(3)], source="klcode")
    assert q.inbox_size() == 2 and redis.llen("rq:queue:tagsync-events") == 0
    assert q.drain_all() == 4
    assert q.inbox_size() == 0 and redis.llen("rq:queue:tagsync-events") == 3
    counts = redis.hgetall("tagsync:m:webhooks")
    assert counts == {b"klcode|accepted|": b"3", b"klcode|duplicate|": b"1"}
