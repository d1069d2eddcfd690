"""The receiver's C-speed check accepts only what the marshmallow path accepts, with as many
tag events; and a body it stored comes out of the pump as the same events."""

from __future__ import annotations

import json

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhooks.fastcheck import klcode_tag_events
from workers.payloads import parse_klcode
from workers.queueing import EventQueue

from .test_schemas import EVENT, _klcode_items

NOW = 1_772_366_405.0


def _agrees(body: bytes) -> bool:
    """Whatever the check accepts, marshmallow accepts with the same number of tag events."""
    count = klcode_tag_events(body)
    if count is None:
        return False
    parsed = parse_klcode(json.loads(body), received_at=NOW)  # raises if it would be a 400
    assert (len(parsed.events), parsed.ignored) == (count, 0)
    return True


_bodies = st.one_of(
    _klcode_items,
    st.lists(_klcode_items, min_size=1, max_size=5).map(lambda items: {"events": items}),
    st.tuples(_klcode_items, st.lists(_klcode_items, max_size=2)).map(
        lambda t: {**t[0], "events": t[1]} if isinstance(t[0], dict) else t[0]
    ),
)


@settings(max_examples=2000, deadline=None)
@given(_bodies)
def test_accepts_only_what_marshmallow_accepts(body: object) -> None:
    _agrees(json.dumps(body).encode())


@settings(max_examples=500, deadline=None)
@given(_bodies, st.data())
def test_byte_level_damage_never_slips_through(body: object, data: st.DataObject) -> None:
    raw = bytearray(json.dumps(body, ensure_ascii=data.draw(st.booleans())).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(
            st.sampled_from(
                [b"\\u0000", b"\\n", b"\n", b"\x01", b"\xff", b"\xed\xa0\x80", b",", b"\\ud800"]
            )
        )
    _agrees(bytes(raw))


@pytest.mark.parametrize(
    "body",
    [
        {**EVENT, "tag": {"name": "VIP\n"}},  # `$` would let a final newline through
        {**EVENT, "id": " "},
        {**EVENT, "customer": {"id": True, "email": "a@b.co"}},
        {**EVENT, "customer": {"id": 1.0, "email": "a@b.co"}},
        {**EVENT, "customer": {"id": 1, "email": "a..b@x.com"}},
        {**EVENT, "customer": {"id": 1, "email": "a@b.co\nc@d.co"}},  # the joiner, inside
        {**EVENT, "customer": {"id": "  ", "email": "a@b.co"}},
        {**EVENT, "tag": {"name": "\u00a0"}},  # blank to str.strip()
        {**EVENT, "occurred_at": "2026-02-30T12:00:00Z"},
        {**EVENT, "type": "order.created"},
        {"events": []},
        {"events": [EVENT] * 1001},
        {**EVENT, "events": "not a list"},
    ],
)
def test_bodies_left_to_marshmallow(body: object) -> None:
    assert klcode_tag_events(json.dumps(body).encode()) is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"evt_1","id":"\\u0000"' + json.dumps(EVENT).encode()[1:],  # a duplicate key
        json.dumps(EVENT).encode().replace(b'"evt_9f2c1a"', b"NaN"),
        b"\xef\xbb\xbf" + json.dumps(EVENT).encode(),  # a BOM: json.loads reads it
        json.dumps(EVENT).encode("utf-16"),
    ],
)
def test_unusual_json_is_left_to_json_loads(raw: bytes) -> None:
    assert klcode_tag_events(raw) is None


def test_the_usual_bodies_take_the_fast_path() -> None:
    # Else the speed-up silently disappears (the answers would still be right).
    assert _agrees(json.dumps(EVENT).encode())
    batch = {"events": [{**EVENT, "id": f"evt_{i}"} for i in range(100)]}
    assert _agrees(json.dumps(batch).encode())
    assert _agrees(json.dumps(EVENT, indent=2).encode())
    # Fields beyond the contract's go the marshmallow way (which ignores them).
    assert klcode_tag_events(json.dumps({**EVENT, "extra": "\u00e9"}).encode()) is None


def test_a_stored_body_comes_out_of_the_pump_as_the_same_events(
    redis: fakeredis.FakeRedis,
) -> None:
    q = EventQueue(redis, "tagsync-events")
    body = json.dumps({"events": [{**EVENT, "id": f"evt_{i}"} for i in range(3)]}).encode()
    q.push_raw(body, 3, received_at=NOW)
    q.push_raw(json.dumps({**EVENT, "tag": {"name": ""}}).encode(), 1, received_at=NOW)
    assert q.drain_all() == 3
    expected = parse_klcode(json.loads(body), received_at=NOW).events
    jobs = [
        json.loads(redis.hget(f"rq:job:{job_id.decode()}", "data"))[2][0]
        for job_id in redis.lrange("rq:queue:tagsync-events", 0, -1)
    ]
    assert jobs == [e.to_dict() for e in expected]
    # A body marshmallow refuses (the check would never pass one) is set aside, not lost.
    assert redis.llen(q.dead_key) == 1 and q.inbox_size() == 0


def test_a_large_body_is_stored_deflated_and_read_back(redis: fakeredis.FakeRedis) -> None:
    q = EventQueue(redis, "tagsync-events")
    body = json.dumps({"events": [{**EVENT, "id": f"evt_{i}"} for i in range(100)]}).encode()
    q.push_raw(body, 100, received_at=NOW)
    (record,) = redis.lrange(q.inbox_key, 0, -1)
    assert len(record) < len(body) / 5 and b'"deflate"' in record.partition(b"\n")[0]
    redis.rpush(q.inbox_key, record[:-20])  # a truncated one: set aside, never half-read
    assert q.drain_all() == 100
    expected = parse_klcode(json.loads(body), received_at=NOW).events
    assert [e.event_id for e in expected] == [
        json.loads(redis.hget(f"rq:job:{job_id.decode()}", "data"))[2][0]["event_id"]
        for job_id in redis.lrange("rq:queue:tagsync-events", 0, -1)
    ]
    assert redis.llen(q.dead_key) == 1
