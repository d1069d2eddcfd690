"""The inbox: the receiver appends, the pump turns records into jobs, all or nothing."""

from __future__ import annotations

import json

import fakeredis
import pytest
from redis import Redis

from workers.embedded import EmbeddedRedis
from workers.events import TagEvent
from workers.pump import Pump
from workers.queueing import EventQueue

from ..harness import wait_for

QUEUE = "rq:queue:tagsync-events"


def event(i: int) -> TagEvent:
    return TagEvent(
        source="klcode" if i % 2 else "ac",
        event_id=f"kl:e{i}",
        op="add",
        email=f"c{i}@x.com",
        tag="VIP",
        occurred_at=1.0,
        received_at=2.0,
    )


def test_push_writes_only_the_inbox_and_drain_makes_jobs(redis: fakeredis.FakeRedis) -> None:
    q = EventQueue(redis, "tagsync-events")
    q.push([event(1), event(2)], source="klcode")
    q.push([event(3)], source="klcode")
    assert q.inbox_size() == 2 and redis.llen(QUEUE) == 0 and not redis.keys("tagsync:seen:*")
    assert q.drain() == 3
    assert q.inbox_size() == 0 and redis.llen(QUEUE) == 3
    assert q.drain() == 0
    assert redis.hgetall("tagsync:m:webhooks") == {
        b"klcode|accepted|": b"2",
        b"ac|accepted|": b"1",
    }
    assert redis.get("tagsync:last_webhook:ac") and redis.get("tagsync:last_webhook:klcode")


def test_drain_is_bounded_and_takes_whole_records(redis: fakeredis.FakeRedis) -> None:
    q = EventQueue(redis, "tagsync-events")
    for i in range(5):
        q.push([event(10 * i + k) for k in range(3)], source="klcode")
    assert q.drain(max_events=4) == 6  # records are never split: two of three events
    assert q.inbox_size() == 3 and redis.llen(QUEUE) == 6
    assert q.drain_all() == 9 and redis.llen(QUEUE) == 15


def test_a_drain_that_lost_the_race_does_nothing(redis: fakeredis.FakeRedis) -> None:
    q = EventQueue(redis, "tagsync-events")
    q.push([event(1)], source="klcode")
    q.push([event(2)], source="klcode")
    first, second = redis.lrange(q.inbox_key, 0, -1)
    redis.lpop(q.inbox_key)  # another pump took the first record meanwhile
    taken = q._write([event(1)], consumed=1, head=first, dead=[])
    assert taken is None
    assert redis.lrange(q.inbox_key, 0, -1) == [second] and redis.llen(QUEUE) == 0
    assert not redis.exists("tagsync:seen:kl:e1")  # nothing marked as seen either


def test_an_unreadable_record_is_set_aside_not_retried_forever(
    redis: fakeredis.FakeRedis,
) -> None:
    q = EventQueue(redis, "tagsync-events")
    redis.rpush(q.inbox_key, b"not json", json.dumps([99, "x", []]))
    q.push([event(1)], source="klcode")
    assert q.drain_all() == 1
    assert redis.llen(QUEUE) == 1 and q.inbox_size() == 0
    assert redis.lrange(q.dead_key, 0, -1) == [b"not json", json.dumps([99, "x", []]).encode()]


def test_a_record_pushed_twice_is_one_job(redis: fakeredis.FakeRedis) -> None:
    # What a repeated RPUSH after a dropped connection leaves behind.
    q = EventQueue(redis, "tagsync-events")
    q.push([event(1)], source="klcode")
    redis.rpush(q.inbox_key, redis.lindex(q.inbox_key, 0))
    assert q.drain_all() == 2
    assert redis.llen(QUEUE) == 1
    assert redis.hget("tagsync:m:webhooks", "klcode|duplicate|") == b"1"


@pytest.fixture
def real_redis(redis_server: EmbeddedRedis) -> Redis:
    client = Redis.from_url(redis_server.url)
    client.flushdb()
    return client


def test_pumps_share_one_lease_and_a_stopped_holder_hands_over(real_redis: Redis) -> None:
    q1, q2 = EventQueue(real_redis, "tagsync-events"), EventQueue(real_redis, "tagsync-events")
    p1 = Pump(q1).start()
    wait_for(lambda: real_redis.exists(q1.inbox_key + ":pump"))
    p2 = Pump(q2).start()
    try:
        q1.push([event(1)], source="klcode")
        wait_for(lambda: real_redis.llen(QUEUE) == 1)  # woken by the push, not by polling
        holder = real_redis.get(q1.inbox_key + ":pump")
        assert holder == p1._token.encode() and p2._token is None  # type: ignore[union-attr]
        p1.stop()
        q2.push([event(2)], source="klcode")
        wait_for(lambda: real_redis.llen(QUEUE) == 2)  # p2 took over the released lease
        assert real_redis.get(q1.inbox_key + ":pump") == p2._token.encode()  # type: ignore[union-attr]
    finally:
        p1.stop()
        p2.stop()
