"""Property-based hostile input against both webhooks and every admin API operation (from the
OpenAPI description): whatever arrives, the answer is a clear 2xx/4xx, never a 500."""

from __future__ import annotations

import re
import string

import fakeredis
import pytest
import requests
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapping_store import Store
from webhooks import create_app
from workers.activecampaign import ActiveCampaignClient

from .helpers import post_klcode

SECRET, TOKEN, ADMIN = "s3cret", "tok", "admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
nasty_text = st.one_of(
    st.text(),
    st.sampled_from(
        ["'; DROP TABLE tag_mappings; --", "\x00", "\u202e", "😀" * 50, "a" * 5000, "%00", "../.."]
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=20,
)
fuzz = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def client(redis: fakeredis.FakeRedis, store: Store) -> FlaskClient:
    # AC is unreachable (port 9): mapping creation must answer 503 or 400, never 500.
    ac = ActiveCampaignClient(
        session=requests.Session(), base_url="http://127.0.0.1:9", api_token="t", timeout=1
    )
    store.create_mapping(klcode_tag="VIP", ac_tag_id=1, ac_tag_name="VIP")
    app = create_app(
        {
            "TAGSYNC_REDIS": redis,
            "TAGSYNC_STORE": store,
            "TAGSYNC_AC": ac,
            "ADMIN_TOKEN": ADMIN,
            "KLCODE_WEBHOOK_SECRET": SECRET,
            "AC_WEBHOOK_TOKEN": TOKEN,
        }
    )
    return app.test_client()


def queued(redis: fakeredis.FakeRedis) -> int:
    return redis.llen("rq:queue:tagsync-events")


@fuzz
@given(
    body=st.binary(max_size=2000),
    ctype=st.sampled_from(["application/json", "text/plain", "", "a/b; x=1"]),
)
def test_klcode_random_bytes(
    client: FlaskClient, redis: fakeredis.FakeRedis, body: bytes, ctype: str
) -> None:
    signed = post_klcode(client, None, secret=SECRET, raw=body, content_type=ctype)
    unsigned = client.post("/webhooks/klcode", data=body, content_type=ctype)
    assert signed.status_code in (200, 400, 415) and signed.is_json
    assert unsigned.status_code == 401
    assert queued(redis) == 0


@fuzz
@given(payload=json_values)
def test_klcode_random_json_is_validated(
    client: FlaskClient, redis: fakeredis.FakeRedis, payload: object
) -> None:
    resp = post_klcode(client, payload, secret=SECRET)
    assert resp.status_code in (200, 400), resp.data
    assert queued(redis) == 0


@fuzz
@given(
    email=nasty_text,
    tag=nasty_text,
    kind=st.sampled_from(["customer.tag_added", "customer.tag_removed"]),
)
def test_klcode_unicode_and_control_characters(
    client: FlaskClient, email: str, tag: str, kind: str
) -> None:
    event = {
        "id": "e1",
        "type": kind,
        "occurred_at": "2026-03-01T12:00:00Z",
        "customer": {"id": 1, "email": email},
        "tag": {"name": tag},
    }
    resp = post_klcode(client, event, secret=SECRET)
    assert resp.status_code in (202, 400)
    if any(c in tag for c in "\x00\x1f\x7f") or not tag.strip():
        assert resp.status_code == 400


@fuzz
@given(
    form=st.dictionaries(
        st.sampled_from(
            [
                "type",
                "date_time",
                "tag",
                "contact[email]",
                "contact[id]",
                "contact[x][y]",
                "initiated_from",
                "[",
                "]]",
            ]
        ),
        nasty_text,
    )
)
def test_ac_random_forms(client: FlaskClient, form: dict[str, str]) -> None:
    resp = client.post(f"/webhooks/activecampaign/{TOKEN}", data=form)
    assert resp.status_code in ((200, 202, 400) if form else (415,)), resp.data


def _operations() -> list[tuple[str, str]]:
    app = create_app(
        {"TAGSYNC_REDIS": fakeredis.FakeRedis(), "TAGSYNC_STORE": None, "ADMIN_TOKEN": ADMIN}
    )
    spec = app.test_client().get("/api/v1/openapi.json", headers=AUTH).json
    return [
        (path, method)
        for path, ops in spec["paths"].items()
        for method in ops
        if method != "parameters"
    ]


OPERATIONS = _operations()


@fuzz
@given(
    op=st.sampled_from(OPERATIONS),
    body=json_values,
    ident=st.one_of(st.integers(-5, 10**12), nasty_text),
    query=st.dictionaries(
        st.sampled_from(["email", "mapping_id", "outcome", "limit", "before"]),
        st.text(string.printable, max_size=20),
    ),
)
def test_every_api_operation_answers_without_500(
    client: FlaskClient, op: tuple[str, str], body: object, ident: object, query: dict[str, str]
) -> None:
    path, method = op
    url = re.sub(r"\{[^}]+\}", requests.utils.quote(str(ident), safe=""), path)
    resp = client.open(url, method=method.upper(), json=body, query_string=query, headers=AUTH)
    assert resp.status_code < 500 or resp.status_code == 503, (
        method,
        url,
        resp.status_code,
        resp.data[:300],
    )
    assert resp.status_code != 410
