"""The stand-ins stay faithful to shared/activecampaign.md and DESIGN.md section 8."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl

import pytest
import requests
from flask import Flask, request

from sandbox import Sandbox
from sandbox.common import ServerThread
from webhooks import signatures


class Catcher:
    """A real HTTP server that records the webhooks it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.cv = threading.Condition()
        app = Flask("catcher")

        @app.post("/<path:_p>")
        def catch(_p: str) -> tuple[str, int]:
            with self.cv:
                self.received.append((dict(request.headers), request.get_data()))
                self.cv.notify_all()
            return "", 202

        self.server = ServerThread(app).start()

    def wait(self, n: int, timeout: float = 5) -> list[tuple[dict[str, str], bytes]]:
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.received) >= n, timeout)
            return list(self.received)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    s = Sandbox(ac_rate_limit=None).start()  # the rate-limit test turns it on
    yield s
    s.stop()


@pytest.fixture
def catcher() -> Iterator[Catcher]:
    c = Catcher()
    yield c
    c.server.stop()


def ac(sb: Sandbox, method: str, path: str, **kw: object) -> requests.Response:
    return requests.request(
        method, f"{sb.ac_url}/api/3{path}", headers={"Api-Token": sb.ac.api_token}, timeout=5, **kw
    )  # type: ignore[arg-type]


def test_ac_needs_api_token(sb: Sandbox) -> None:
    assert requests.get(f"{sb.ac_url}/api/3/tags", timeout=5).status_code == 403


def test_ac_ids_and_totals_are_strings_and_pages_cap_at_100(sb: Sandbox) -> None:
    for i in range(120):
        sb.ac.add_contact(f"p{i}@x.com")
    body = ac(sb, "GET", "/contacts", params={"limit": 500}).json()
    assert len(body["contacts"]) == 100
    assert isinstance(body["meta"]["total"], str) and int(body["meta"]["total"]) >= 120
    assert all(isinstance(c["id"], str) for c in body["contacts"])


def test_ac_contact_tags_add_readd_delete(sb: Sandbox) -> None:
    cid, tid = sb.ac.add_contact("z@x.com"), sb.ac.tag_by_name("VIP Customer")
    first = ac(
        sb, "POST", "/contactTags", json={"contactTag": {"contact": str(cid), "tag": str(tid)}}
    )
    again = ac(
        sb, "POST", "/contactTags", json={"contactTag": {"contact": str(cid), "tag": str(tid)}}
    )
    assert (first.status_code, again.status_code) == (201, 200)
    ct = first.json()["contactTag"]
    assert ct["id"] == again.json()["contactTag"]["id"] and "contacts" in first.json()
    listed = ac(sb, "GET", f"/contacts/{cid}/contactTags").json()
    assert "meta" not in listed and listed["contactTags"][0]["tag"] == str(tid)
    assert ac(sb, "DELETE", f"/contactTags/{ct['id']}").json() == {}
    gone = ac(sb, "DELETE", f"/contactTags/{ct['id']}")
    assert gone.status_code == 404
    assert gone.json() == {"message": f"No Result found for SubscriberTag with id {ct['id']}"}
    unknown = ac(
        sb, "POST", "/contactTags", json={"contactTag": {"contact": "999999", "tag": str(tid)}}
    )
    assert (
        unknown.status_code == 404 and unknown.json()["errors"][0]["detail"] == "Contact not found"
    )
    assert (
        ac(sb, "POST", "/contactTags", json={"contactTag": {"contact": str(cid)}}).status_code
        == 422
    )


def test_ac_tag_search_is_substring_eq_is_exact(sb: Sandbox) -> None:
    sb.ac.add_tag("VIP Customer - old")
    subs = ac(sb, "GET", "/tags", params={"search": "VIP"}).json()["tags"]
    exact = ac(sb, "GET", "/tags", params={"filters[search][eq]": "VIP Customer"}).json()["tags"]
    assert len(subs) == 2 and [t["tag"] for t in exact] == ["VIP Customer"]
    one = ac(sb, "GET", f"/tags/{exact[0]['id']}").json()["tag"]
    assert one["subscriber_count"] == "0"
    assert ac(sb, "GET", "/tags/424242").json() == {
        "message": "No Result found for Tag with id 424242"
    }


def test_ac_rate_limit_429_with_retry_after(sb: Sandbox) -> None:
    sb.ac.rate_limit = 5
    codes = [ac(sb, "GET", "/tags").status_code for _ in range(8)]
    assert codes.count(200) == 5 and codes[5:] == [429, 429, 429]
    limited = ac(sb, "GET", "/tags")
    assert limited.headers["Retry-After"] == "1"
    time.sleep(1.05)
    assert ac(sb, "GET", "/tags").status_code == 200


def test_ac_webhooks_are_form_encoded_and_api_changes_say_api(
    sb: Sandbox, catcher: Catcher
) -> None:
    url = f"{catcher.server.url}/hook"
    hook = ac(
        sb,
        "POST",
        "/webhooks",
        json={
            "webhook": {
                "name": "t",
                "url": url,
                "events": ["contact_tag_added"],
                "sources": ["api", "admin"],
            }
        },
    )
    assert hook.status_code == 201 and hook.json()["webhook"]["id"].isdigit()
    assert (
        ac(sb, "GET", "/webhooks", params={"filters[url]": url}).json()["webhooks"][0]["url"] == url
    )
    cid, tid = sb.ac.add_contact("w@x.com"), sb.ac.tag_by_name("Beef Lover")
    ac(sb, "POST", "/contactTags", json={"contactTag": {"contact": str(cid), "tag": str(tid)}})
    ((headers, body),) = catcher.wait(1)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    assert form["type"] == "contact_tag_added" and form["initiated_from"] == "api"
    assert form["contact[email]"] == "w@x.com" and form["tag"] == "Beef Lover"
    assert (
        form["date_time"][-6] in "+-" and "." not in form["date_time"]
    )  # whole seconds, with offset


def test_ac_bulk_import_adds_by_name_and_fires_no_webhook(sb: Sandbox, catcher: Catcher) -> None:
    sb.ac.webhooks[1] = {
        "id": 1,
        "url": f"{catcher.server.url}/h",
        "events": ["contact_tag_added"],
        "sources": ["api", "admin", "system", "public"],
    }
    contacts = [{"email": f"b{i}@x.com", "tags": ["Seafood Fan"]} for i in range(12)]
    resp = ac(sb, "POST", "/import/bulk_import", json={"contacts": contacts})
    assert resp.status_code == 200 and resp.json()["queued_contacts"] == 12
    info = ac(sb, "GET", "/import/info", params={"batchId": resp.json()["batchId"]}).json()
    assert info["status"] == "completed" and len(info["success"]) == 12
    assert all("Seafood Fan" in sb.ac.tags_of(f"b{i}@x.com") for i in range(12))
    assert sb.ac.outbox is not None and sb.ac.outbox.idle(2)
    assert catcher.received == []
    assert ac(sb, "POST", "/import/bulk_import", json={"contacts": [{}] * 251}).status_code == 400


def test_klcode_api_and_signed_webhooks(sb: Sandbox, catcher: Catcher) -> None:
    sb.point_klcode_webhooks(f"{catcher.server.url}/webhooks/klcode")
    key = {"Authorization": f"Bearer {sb.klcode.api_key}"}
    assert requests.get(f"{sb.klcode_url}/api/v1/tags", timeout=5).status_code == 401
    cid = sb.klcode.add_customer("k@x.com")
    found = requests.get(
        f"{sb.klcode_url}/api/v1/customers", params={"email": "K@x.com"}, headers=key, timeout=5
    )
    assert found.json()["customers"][0]["id"] == cid
    post = f"{sb.klcode_url}/api/v1/customers/{cid}/tags"
    assert requests.post(post, json={"tag": "At Risk"}, headers=key, timeout=5).status_code == 201
    assert requests.post(post, json={"tag": "At Risk"}, headers=key, timeout=5).status_code == 200
    ((headers, body),) = catcher.wait(1)
    signatures.verify(headers["X-Klcode-Signature"], body, sb.klcode.webhook_secret)
    delete = f"{post}/At%20Risk"
    assert requests.delete(delete, headers=key, timeout=5).status_code == 204
    assert requests.delete(delete, headers=key, timeout=5).status_code == 404
    catcher.wait(2)
    page = requests.get(
        f"{sb.klcode_url}/api/v1/tags/VIP%20Customer/customers",
        params={"per_page": 2},
        headers=key,
        timeout=5,
    ).json()
    assert set(page) == {"customers", "page", "per_page", "total"}


def test_admin_pages_tag_by_hand(sb: Sandbox) -> None:
    email = next(iter(sb.klcode.customers.values()))["email"]
    resp = requests.post(
        f"{sb.klcode_url}/_sandbox/tag",
        data={"email": email, "tag": "Churned", "op": "add"},
        timeout=5,
    )
    assert resp.status_code == 200 and "KlCode stand-in" in resp.text  # redirected back to the page
    assert "Churned" in sb.klcode.tags_of(email)
    assert "ActiveCampaign stand-in" in requests.get(sb.ac_url, timeout=5).text
