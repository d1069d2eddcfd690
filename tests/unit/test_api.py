"""The admin JSON API (DESIGN.md section 6): auth, validation, conflicts, Sync Now."""

from __future__ import annotations

import base64
import re

import fakeredis
import pytest
import requests
import responses
from flask.testing import FlaskClient
from rq import Queue
from rq.serializers import JSONSerializer

from mapping_store import Store
from webhooks import create_app
from workers.activecampaign import ActiveCampaignClient
from workers.queueing import RECONCILE_QUEUE

AC = "http://ac.test"
TOKEN = "admin-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PUBLIC = ("/webhooks/", "/healthz", "/readyz", "/metrics", "/static/")


@pytest.fixture
def app(redis: fakeredis.FakeRedis, store: Store):
    ac = ActiveCampaignClient(session=requests.Session(), base_url=AC, api_token="t", timeout=3)
    return create_app(
        {
            "TESTING": True,
            "TAGSYNC_REDIS": redis,
            "TAGSYNC_STORE": store,
            "TAGSYNC_AC": ac,
            "ADMIN_TOKEN": TOKEN,
            "KLCODE_WEBHOOK_SECRET": "s",
            "AC_WEBHOOK_TOKEN": "t",
        }
    )


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


def ac_tag(tag_id: int, name: str) -> None:
    responses.get(f"{AC}/api/3/tags/{tag_id}", json={"tag": {"id": str(tag_id), "tag": name}})


def concrete(rule: str) -> str:
    """A URL that matches `rule`, with every variable filled in."""
    rule = re.sub(r"<int:[^>]+>", "0", rule)
    return re.sub(r"<[^>]+>", "x", rule)


def test_every_route_but_the_public_ones_needs_the_token(app, client: FlaskClient) -> None:
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(PUBLIC):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            resp = client.open(concrete(rule.rule), method=method, follow_redirects=True)
            assert resp.status_code == 401, (method, rule.rule, resp.status_code)
            wrong = client.open(
                concrete(rule.rule),
                method=method,
                headers={"Authorization": "Bearer nope"},
                follow_redirects=True,
            )
            assert wrong.status_code == 401
            checked += 1
    assert checked >= 9


def test_no_admin_token_configured_means_closed(redis, store) -> None:
    c = create_app(
        {"TAGSYNC_REDIS": redis, "TAGSYNC_STORE": store, "ADMIN_TOKEN": ""}
    ).test_client()
    assert c.get("/api/v1/mappings", headers=AUTH).status_code == 503
    assert c.get("/api/v1/mappings", headers={"Authorization": "Bearer "}).status_code == 503


def test_basic_auth_with_any_user(client: FlaskClient) -> None:
    basic = base64.b64encode(f"ops:{TOKEN}".encode()).decode()
    assert (
        client.get("/api/v1/mappings", headers={"Authorization": f"Basic {basic}"}).status_code
        == 200
    )


@responses.activate
def test_mapping_crud(client: FlaskClient) -> None:
    ac_tag(64, "VIP Customer (AC)")
    created = client.post(
        "/api/v1/mappings", json={"klcode_tag": "VIP Customer", "ac_tag_id": "64"}, headers=AUTH
    )
    assert created.status_code == 201
    m = created.json
    assert (m["ac_tag_name"], m["direction"], m["active"], m["schedule"]) == (
        "VIP Customer (AC)",
        "bidirectional",
        True,
        "off",
    )
    assert set(m) == {
        "id",
        "klcode_tag",
        "ac_tag_id",
        "ac_tag_name",
        "direction",
        "active",
        "schedule",
        "customer_count",
        "customer_count_at",
        "last_synced_at",
        "created_at",
        "updated_at",
    }
    assert (
        client.get(f"/api/v1/mappings/{m['id']}", headers=AUTH).json["klcode_tag"] == "VIP Customer"
    )
    patched = client.patch(
        f"/api/v1/mappings/{m['id']}",
        json={"direction": "klcode_to_ac", "active": False},
        headers=AUTH,
    )
    assert patched.status_code == 200 and patched.json["direction"] == "klcode_to_ac"
    assert patched.json["schedule"] == "off"  # PATCH leaves unnamed fields alone
    assert [x["id"] for x in client.get("/api/v1/mappings", headers=AUTH).json["mappings"]] == [
        m["id"]
    ]
    assert client.delete(f"/api/v1/mappings/{m['id']}", headers=AUTH).status_code == 204
    assert client.get(f"/api/v1/mappings/{m['id']}", headers=AUTH).status_code == 404
    assert client.delete(f"/api/v1/mappings/{m['id']}", headers=AUTH).status_code == 404


@responses.activate
def test_mapping_errors(client: FlaskClient) -> None:
    ac_tag(64, "VIP")
    responses.get(
        f"{AC}/api/3/tags/99", status=404, json={"message": "No Result found for Tag with id 99"}
    )
    responses.get(f"{AC}/api/3/tags/7", status=503)
    assert (
        client.post(
            "/api/v1/mappings", json={"klcode_tag": "VIP", "ac_tag_id": 64}, headers=AUTH
        ).status_code
        == 201
    )
    dup = client.post(
        "/api/v1/mappings", json={"klcode_tag": " vip ", "ac_tag_id": 64}, headers=AUTH
    )
    assert dup.status_code == 409 and dup.json["field"] == "klcode_tag"
    unknown = client.post(
        "/api/v1/mappings", json={"klcode_tag": "X", "ac_tag_id": 99}, headers=AUTH
    )
    assert unknown.status_code == 400 and "99" in unknown.json["fields"]["ac_tag_id"][0]
    down = client.post("/api/v1/mappings", json={"klcode_tag": "Y", "ac_tag_id": 7}, headers=AUTH)
    assert down.status_code == 503 and down.json["error"] == "ac_unavailable"
    bad = client.post(
        "/api/v1/mappings",
        json={"klcode_tag": "", "ac_tag_id": -1, "direction": "up", "x": 1},
        headers=AUTH,
    )
    assert bad.status_code == 400 and set(bad.json["fields"]) == {
        "klcode_tag",
        "ac_tag_id",
        "direction",
        "x",
    }
    assert client.post("/api/v1/mappings", data="nope", headers=AUTH).status_code == 400
    assert client.post("/api/v1/mappings", json=[1], headers=AUTH).status_code == 400
    assert (
        client.patch("/api/v1/mappings/999", json={"active": True}, headers=AUTH).status_code == 404
    )


@responses.activate
def test_sync_now_queues_reconciliations(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    ac_tag(1, "A")
    ac_tag(2, "B")
    a = client.post("/api/v1/mappings", json={"klcode_tag": "A", "ac_tag_id": 1}, headers=AUTH).json
    client.post(
        "/api/v1/mappings", json={"klcode_tag": "B", "ac_tag_id": 2, "active": False}, headers=AUTH
    )
    one = client.post(f"/api/v1/mappings/{a['id']}/sync", json={"dry_run": True}, headers=AUTH)
    assert one.status_code == 202 and one.json["job_id"]
    status = client.get(f"/api/v1/jobs/{one.json['job_id']}", headers=AUTH)
    assert status.json["status"] == "queued" and status.json["progress"]["dry_run"] is True
    everyone = client.post("/api/v1/sync", headers=AUTH)
    assert everyone.status_code == 202 and [j["mapping_id"] for j in everyone.json["jobs"]] == [
        a["id"]
    ]
    assert len(Queue(RECONCILE_QUEUE, connection=redis, serializer=JSONSerializer)) == 2
    assert client.post("/api/v1/mappings/999/sync", headers=AUTH).status_code == 404
    assert (
        client.post(
            f"/api/v1/mappings/{a['id']}/sync", json={"dry_run": "maybe"}, headers=AUTH
        ).status_code
        == 400
    )
    assert client.get("/api/v1/jobs/nope", headers=AUTH).status_code == 404


def test_sync_log_filters(client: FlaskClient, store: Store) -> None:
    store.record_outcome(
        source="klcode", outcome="applied", event_id="kl:1", email="a@x.com", mapping_id=1
    )
    store.record_outcome(
        source="ac", outcome="echo", event_id="ac:1", email="a@x.com", mapping_id=1
    )
    store.record_outcome(
        source="ac", outcome="applied", event_id="ac:2", email="b@x.com", mapping_id=2
    )
    entries = client.get("/api/v1/sync-log?email=A@x.com", headers=AUTH).json["entries"]
    assert [e["event_id"] for e in entries] == ["ac:1", "kl:1"]
    assert (
        len(
            client.get("/api/v1/sync-log?outcome=applied&mapping_id=2", headers=AUTH).json[
                "entries"
            ]
        )
        == 1
    )
    assert client.get("/api/v1/sync-log?limit=0", headers=AUTH).status_code == 400
    assert client.get("/api/v1/sync-log?outcome=bogus", headers=AUTH).status_code == 400
    assert client.get("/api/v1/sync-log?mapping_id=x", headers=AUTH).status_code == 400


def test_basic_auth_posts_must_be_json(client: FlaskClient) -> None:
    basic = base64.b64encode(f"ops:{TOKEN}".encode()).decode()
    forged = client.post(
        "/api/v1/sync", data={"a": "b"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert forged.status_code == 415
    assert (
        client.post(
            "/api/v1/sync", json={}, headers={"Authorization": f"Basic {basic}"}
        ).status_code
        == 202
    )
    assert client.post("/api/v1/sync", headers=AUTH).status_code == 202  # Bearer: not a browser


def test_admin_forms_need_the_csrf_token(client: FlaskClient) -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(f"ops:{TOKEN}".encode()).decode()}
    page = client.get("/", headers=basic)
    assert page.status_code == 200 and b"Add New Mapping" in page.data
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    assert client.post("/sync", headers=basic).status_code == 400
    assert client.post("/sync", data={"csrf_token": "forged"}, headers=basic).status_code == 400
    ok = client.post("/sync", data={"csrf_token": token}, headers=basic)
    assert ok.status_code == 303


def test_metrics_are_public_and_prometheus(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    client.post("/webhooks/activecampaign/wrong", data={"type": "x"})
    text = client.get("/metrics").data.decode()
    assert (
        'tagsync_webhooks_total{reason="invalid_token",result="rejected",source="ac"} 1.0' in text
    )
    assert 'tagsync_queue_depth{queue="tagsync-events",registry="queued"} 0.0' in text
    assert 'tagsync_queue_depth{queue="tagsync-events",registry="inbox"} 0.0' in text
    assert "tagsync_ac_rate_limit" in text
    redis.rpush("tagsync:inbox:tagsync-events", "a record no pump has taken yet")
    text = client.get("/metrics").data.decode()
    assert 'tagsync_queue_depth{queue="tagsync-events",registry="inbox"} 1.0' in text
