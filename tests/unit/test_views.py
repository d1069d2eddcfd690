from __future__ import annotations

import functools
import time
from unittest import mock

import fakeredis
import pytest
from flask.testing import FlaskClient
from redis.exceptions import ConnectionError as RedisConnectionError

from mapping_store import Store
from webhooks import create_app
from workers.queueing import EventQueue, dedup_key

from . import helpers

SECRET = "kl-secret"
TOKEN = "ac-token-123"
EVENT = {
    "id": "evt_1",
    "type": "customer.tag_added",
    "occurred_at": "2026-03-01T12:00:00Z",
    "customer": {"id": 1042, "email": "Jane.Doe@Example.com"},
    "tag": {"name": "VIP Customer"},
}
AC_FORM = {
    "type": "contact_tag_added",
    "date_time": "2024-02-28T07:04:13-06:00",
    "initiated_from": "admin",
    "contact[id]": "3",
    "contact[email]": "code.test@gmail.com",
    "contact[tags]": "tag1, tag2",
    "tag": "tag2",
}


@pytest.fixture
def client(redis: fakeredis.FakeRedis, store: Store) -> FlaskClient:
    app = create_app(
        {
            "TESTING": True,
            "TAGSYNC_REDIS": redis,
            "TAGSYNC_STORE": store,
            "KLCODE_WEBHOOK_SECRET": SECRET,
            "AC_WEBHOOK_TOKEN": TOKEN,
        }
    )
    return app.test_client()


post_klcode = functools.partial(helpers.post_klcode, secret=SECRET)


def queued(redis: fakeredis.FakeRedis) -> int:
    """Jobs on the queue once the pump has drained the inbox."""
    EventQueue(redis, "tagsync-events").drain_all()
    return redis.llen("rq:queue:tagsync-events")


def test_klcode_event_is_queued_once(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    first = post_klcode(client, EVENT)
    assert first.status_code == 202
    assert first.json == {"status": "queued", "events": 1}
    # A redelivery is durable at once too; the pump then recognises it (and counts it).
    again = post_klcode(client, EVENT)
    assert again.status_code == 202 and again.json == {"status": "queued", "events": 1}
    assert queued(redis) == 1
    assert redis.exists(dedup_key("kl:evt_1"))
    assert redis.hget("tagsync:m:webhooks", "klcode|duplicate|") == b"1"


def test_klcode_batch(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    events = [{**EVENT, "id": f"evt_{i}"} for i in range(250)] + [
        {"id": "x", "type": "customer.created"}
    ]
    resp = post_klcode(client, {"events": events})
    assert resp.status_code == 202 and resp.json == {
        "status": "queued",
        "events": 250,
        "ignored": 1,
    }
    assert queued(redis) == 250


def test_klcode_non_tag_event_is_ignored(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    resp = post_klcode(client, {"id": "e", "type": "order.created"})
    assert resp.status_code == 200 and resp.json["status"] == "ignored"
    assert queued(redis) == 0


def test_klcode_bad_signature_401(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    resp = post_klcode(client, EVENT, secret="wrong")
    assert resp.status_code == 401 and resp.json["error"] == "invalid_signature"
    missing = client.post("/webhooks/klcode", json=EVENT)
    assert missing.status_code == 401 and missing.json["error"] == "missing_signature"
    assert queued(redis) == 0


def test_klcode_invalid_payload_400_with_fields(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    resp = post_klcode(client, {**EVENT, "customer": {"id": 1}})
    assert resp.status_code == 400
    assert resp.json["error"] == "invalid_payload"
    assert "email" in resp.json["fields"]["customer"]
    bad_json = post_klcode(client, None, raw=b"{not json")
    assert bad_json.status_code == 400 and bad_json.json["error"] == "invalid_payload"
    deep = post_klcode(client, None, raw=b"[" * 100_000 + b"]" * 100_000)
    assert deep.status_code == 400
    assert queued(redis) == 0


def test_klcode_wrong_content_type_415(client: FlaskClient) -> None:
    resp = post_klcode(client, EVENT, content_type="text/plain")
    assert resp.status_code == 415


def test_oversize_body_413(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    big = b'{"pad":"' + b"x" * (1024 * 1024) + b'"}'
    resp = post_klcode(client, None, raw=big)
    assert resp.status_code == 413 and resp.json["error"] == "payload_too_large"
    ac = client.post(f"/webhooks/activecampaign/{TOKEN}", data={"tag": "x" * (1024 * 1024 + 10)})
    assert ac.status_code == 413
    assert queued(redis) == 0


def test_redis_down_503_and_nothing_marked(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    ext = client.application.extensions["tagsync"]
    with mock.patch.object(ext.events._direct, "command", side_effect=RedisConnectionError("down")):
        resp = post_klcode(client, EVENT)
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert queued(redis) == 0
    # The sender's retry is accepted: the failed attempt did not mark the delivery as seen.
    retry = post_klcode(client, EVENT)
    assert retry.status_code == 202 and retry.json["events"] == 1
    assert queued(redis) == 1


def test_ac_webhook_queued_and_deduplicated(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    resp = client.post(f"/webhooks/activecampaign/{TOKEN}", data=AC_FORM)
    assert resp.status_code == 202 and resp.json["events"] == 1
    again = client.post(f"/webhooks/activecampaign/{TOKEN}", data=AC_FORM)
    assert again.status_code == 202
    assert queued(redis) == 1
    assert redis.hget("tagsync:m:webhooks", "ac|duplicate|") == b"1"
    assert float(redis.get("tagsync:last_webhook:ac")) == pytest.approx(time.time(), abs=5)


def test_ac_webhook_errors(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    assert client.post("/webhooks/activecampaign/wrong", data=AC_FORM).status_code == 401
    assert client.post(f"/webhooks/activecampaign/{TOKEN}", json=AC_FORM).status_code == 415
    bad = client.post(f"/webhooks/activecampaign/{TOKEN}", data={**AC_FORM, "contact[email]": "x"})
    assert bad.status_code == 400 and "contact" in bad.json["fields"]
    other = client.post(
        f"/webhooks/activecampaign/{TOKEN}", data={"type": "update", "date_time": "x"}
    )
    assert other.status_code == 200 and other.json["status"] == "ignored"
    assert queued(redis) == 0


def test_unconfigured_secrets_refuse_with_503(redis: fakeredis.FakeRedis, store: Store) -> None:
    app = create_app(
        {
            "TAGSYNC_REDIS": redis,
            "TAGSYNC_STORE": store,
            "KLCODE_WEBHOOK_SECRET": "",
            "AC_WEBHOOK_TOKEN": "",
        }
    )
    c = app.test_client()
    assert post_klcode(c, EVENT).status_code == 503
    assert c.post("/webhooks/activecampaign/anything", data=AC_FORM).status_code == 503


def test_never_410_for_unknown_paths(client: FlaskClient) -> None:
    resp = client.post("/webhooks/activecampaign/")
    assert resp.status_code in (404, 405) and resp.is_json


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["redis"] == "ok" and ready.json["store"] == "ok"


def test_readiness_reports_redis_down(client: FlaskClient) -> None:
    ext = client.application.extensions["tagsync"]
    with mock.patch.object(ext.redis, "ping", side_effect=RedisConnectionError("down")):
        resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.json["redis"].startswith("error")
