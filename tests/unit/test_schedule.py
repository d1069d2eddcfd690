from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import fakeredis
from rq import Queue
from rq.serializers import JSONSerializer

from mapping_store import Store
from workers import schedule
from workers.queueing import RECONCILE_QUEUE

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc).timestamp()


class FakeKlCode:
    def list_tags(self) -> list[tuple[str, int]]:
        return [("vip customer", 42), ("Other", 3)]


def ctx(redis: fakeredis.FakeRedis, store: Store) -> SimpleNamespace:
    return SimpleNamespace(redis=redis, store=store, klcode=FakeKlCode())


def queued(redis: fakeredis.FakeRedis) -> list[str]:
    return Queue(RECONCILE_QUEUE, connection=redis, serializer=JSONSerializer).get_job_ids()


def test_due(store: Store) -> None:
    m = store.create_mapping(klcode_tag="A", ac_tag_id=1, ac_tag_name="A", schedule="hourly")
    assert schedule.due(m, NOW)  # never synced
    store.record_counts(m.id, customer_count=1, synced=True)
    m = store.get_mapping(m.id)
    assert not schedule.due(m, m.last_synced_at.timestamp() + 3599)
    assert schedule.due(m, m.last_synced_at.timestamp() + 3600)
    off = store.create_mapping(klcode_tag="B", ac_tag_id=2, ac_tag_name="B")
    inactive = store.update_mapping(
        store.create_mapping(klcode_tag="C", ac_tag_id=3, ac_tag_name="C", schedule="daily").id,
        active=False,
    )
    assert not schedule.due(off, NOW) and not schedule.due(inactive, NOW)


def test_tick_queues_each_due_mapping_once_per_slot(
    redis: fakeredis.FakeRedis, store: Store
) -> None:
    hourly = store.create_mapping(
        klcode_tag="VIP Customer", ac_tag_id=1, ac_tag_name="V", schedule="hourly"
    )
    store.create_mapping(klcode_tag="Off", ac_tag_id=2, ac_tag_name="O")
    assert schedule.tick(ctx(redis, store), NOW) == [hourly.id]
    assert schedule.tick(ctx(redis, store), NOW + 1) == []  # another scheduler ticked moments ago
    redis.delete(schedule.TICK_LOCK)
    assert schedule.tick(ctx(redis, store), NOW + 40) == []  # same slot: already queued
    assert len(queued(redis)) == 1
    redis.delete(schedule.TICK_LOCK)
    assert schedule.tick(ctx(redis, store), NOW + 3600) == [hourly.id]  # next hour, still unsynced


def test_tick_refreshes_customer_counts(redis: fakeredis.FakeRedis, store: Store) -> None:
    m = store.create_mapping(klcode_tag="VIP Customer", ac_tag_id=1, ac_tag_name="V")
    schedule.tick(ctx(redis, store), NOW)
    fresh = store.get_mapping(m.id)
    assert fresh.customer_count == 42 and fresh.customer_count_at is not None
    assert fresh.last_synced_at is None  # a count is not a sync
    assert fresh.customer_count_at > datetime.now(timezone.utc) - timedelta(minutes=1)


def test_stranded_deferred_adds_get_a_new_flush(redis: fakeredis.FakeRedis) -> None:
    from workers.coalesce import MAPPINGS, PENDING, SCHEDULED, stranded

    queue = Queue("tagsync-events", connection=redis, serializer=JSONSerializer)
    redis.zadd(PENDING.format(mid=5), {"a@x.com": 1.0})
    redis.zadd(PENDING.format(mid=6), {"b@x.com": 1.0})
    redis.sadd(MAPPINGS, 5, 6, 7)  # 7: nothing pending any more
    redis.set(SCHEDULED.format(mid=6), "1")  # mapping 6 has a live flush
    assert stranded(redis, queue) == [5]
    assert [j.func_name for j in queue.get_jobs()] == ["workers.jobs.flush_bulk"]
    assert stranded(redis, queue) == []  # now marked
    assert {int(m) for m in redis.smembers(MAPPINGS)} == {5, 6}
