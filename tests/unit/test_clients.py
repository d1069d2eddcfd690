"""The thin clients against `responses`: error mapping, retries, AC's quirks."""

from __future__ import annotations

import fakeredis
import pytest
import requests
import responses

from workers.activecampaign import ACContactMissing, ActiveCampaignClient
from workers.errors import ACPermanentError, ACTransientError, KlCodeTransientError, TransientError
from workers.klcode import KlCodeClient
from workers.ratelimit import RateLimiter

AC = "https://acct.api-us1.com"
KL = "https://klcode.example"


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record tenacity's waits instead of sleeping them."""
    waits: list[float] = []
    monkeypatch.setattr("tenacity.nap.time.sleep", waits.append)
    return waits


@pytest.fixture
def ac() -> ActiveCampaignClient:
    return ActiveCampaignClient(session=requests.Session(), base_url=AC, api_token="tok", timeout=3)


@pytest.fixture
def kl() -> KlCodeClient:
    return KlCodeClient(session=requests.Session(), base_url=KL, api_key="key", timeout=3)


@responses.activate
def test_ac_sends_token_and_parses_string_ids(ac: ActiveCampaignClient) -> None:
    responses.get(
        f"{AC}/api/3/contacts",
        json={
            "scoreValues": [],
            "contacts": [{"id": "322", "email": "Jane@Example.com"}],
            "meta": {"total": "1"},
        },
    )
    assert ac.find_contact_id("jane@example.com") == 322
    assert responses.calls[0].request.headers["Api-Token"] == "tok"
    assert "email=jane%40example.com" in responses.calls[0].request.url


@responses.activate
def test_ac_add_201_new_200_present(ac: ActiveCampaignClient) -> None:
    body = {"contactTag": {"contact": "322", "tag": "64", "id": "34"}}
    responses.post(
        f"{AC}/api/3/contactTags", json={"contacts": [{"id": "322"}], **body}, status=201
    )
    responses.post(f"{AC}/api/3/contactTags", json=body, status=200)
    assert ac.add_contact_tag(322, 64) == (34, True)
    assert ac.add_contact_tag(322, 64) == (34, False)
    assert responses.calls[0].request.body == b'{"contactTag": {"contact": "322", "tag": "64"}}'


@responses.activate
def test_ac_add_unknown_contact_is_a_typed_permanent_error(ac: ActiveCampaignClient) -> None:
    responses.post(
        f"{AC}/api/3/contactTags",
        json={"errors": [{"status": 404, "title": "Not Found", "detail": "Contact not found"}]},
        status=404,
    )
    with pytest.raises(ACContactMissing):
        ac.add_contact_tag(1, 64)
    assert len(responses.calls) == 1


@responses.activate
def test_ac_delete_404_is_success_false(ac: ActiveCampaignClient) -> None:
    responses.delete(
        f"{AC}/api/3/contactTags/35",
        json={"message": "No Result found for SubscriberTag with id 35"},
        status=404,
    )
    responses.delete(f"{AC}/api/3/contactTags/36", json={}, status=200)
    assert ac.delete_contact_tag(35) is False
    assert ac.delete_contact_tag(36) is True


@responses.activate
def test_ac_contact_tags_without_meta(ac: ActiveCampaignClient) -> None:
    responses.get(
        f"{AC}/api/3/contacts/324/contactTags",
        json={"contactTags": [{"contact": "324", "tag": "66", "id": "36"}]},
    )
    assert ac.contact_tags(324) == {66: 36}


@responses.activate
def test_ac_429_honours_retry_after_then_succeeds(
    ac: ActiveCampaignClient, no_sleep: list[float]
) -> None:
    responses.get(
        f"{AC}/api/3/tags/5",
        json={"message": "slow down"},
        status=429,
        headers={"Retry-After": "2"},
    )
    responses.get(
        f"{AC}/api/3/tags/5", json={"tag": {"id": "5", "tag": "VIP", "subscriber_count": "3"}}
    )
    tag = ac.get_tag(5)
    assert tag is not None and (tag.id, tag.name, tag.subscriber_count) == (5, "VIP", 3)
    assert no_sleep == [2.0]


@responses.activate
def test_ac_429_pauses_the_shared_limiter() -> None:
    redis = fakeredis.FakeRedis()
    limiter = RateLimiter(redis, key="t", rate=5)
    client = ActiveCampaignClient(
        session=requests.Session(), base_url=AC, api_token="t", timeout=3, limiter=limiter
    )
    responses.get(f"{AC}/api/3/tags/5", status=429, headers={"Retry-After": "7"})
    responses.get(f"{AC}/api/3/tags/5", json={"tag": {"id": "5", "tag": "VIP"}})
    blocked = {}
    original = limiter.block
    limiter.block = lambda s: blocked.setdefault("s", s) and original(s)  # type: ignore[method-assign]
    limiter.acquire = lambda: 0.0  # type: ignore[method-assign]
    client.get_tag(5)
    assert blocked["s"] == 7.0
    assert int(redis.pttl("t:blocked")) > 6000


@responses.activate
def test_ac_503_retried_then_gives_up_transient(
    ac: ActiveCampaignClient, no_sleep: list[float]
) -> None:
    for _ in range(3):
        responses.get(f"{AC}/api/3/tags/5", status=503, body="<html>busy</html>")
    with pytest.raises(ACTransientError) as exc:
        ac.get_tag(5)
    assert exc.value.status == 503
    assert len(responses.calls) == 3
    assert len(no_sleep) == 2 and all(0 < w <= 8.5 for w in no_sleep)


@responses.activate
def test_timeouts_and_connection_errors_are_transient(ac: ActiveCampaignClient) -> None:
    responses.get(f"{AC}/api/3/tags/5", body=requests.Timeout())
    responses.get(f"{AC}/api/3/tags/6", body=requests.ConnectionError())
    with pytest.raises(TransientError) as t:
        ac.get_tag(5)
    assert t.value.reason == "timeout"
    with pytest.raises(TransientError) as c:
        ac.get_tag(6)
    assert c.value.reason == "connection"


@responses.activate
def test_permanent_errors_are_not_retried(ac: ActiveCampaignClient) -> None:
    responses.post(
        f"{AC}/api/3/contactTags",
        status=422,
        json={"errors": [{"status": 422, "title": "Missing attribute"}]},
    )
    responses.get(f"{AC}/api/3/tags/5", status=403, json={"message": "No Result found for User"})
    with pytest.raises(ACPermanentError):
        ac.add_contact_tag(1, 2)
    with pytest.raises(ACPermanentError) as exc:
        ac.get_tag(5)
    assert exc.value.status == 403
    assert len(responses.calls) == 2


@responses.activate
def test_ac_tag_404_is_none(ac: ActiveCampaignClient) -> None:
    responses.get(
        f"{AC}/api/3/tags/31", status=404, json={"message": "No Result found for Tag with id 31"}
    )
    assert ac.get_tag(31) is None


@responses.activate
def test_find_tag_compares_names_exactly(ac: ActiveCampaignClient) -> None:
    responses.get(
        f"{AC}/api/3/tags",
        json={
            "tags": [
                {"id": "1", "tag": "VIP-old", "tagType": "contact"},
                {"id": "2", "tag": "VIP", "tagType": "template"},
                {"id": "3", "tag": "VIP", "tagType": "contact"},
            ],
            "meta": {"total": "3"},
        },
    )
    tag = ac.find_tag("VIP")
    assert tag is not None and tag.id == 3
    assert "filters%5Bsearch%5D%5Beq%5D=VIP" in responses.calls[0].request.url


@responses.activate
def test_contacts_with_tag_pages_by_100(ac: ActiveCampaignClient) -> None:
    page1 = [{"id": str(i), "email": f"c{i}@x.com"} for i in range(100)]
    page2 = [{"id": "100", "email": "c100@x.com"}]
    responses.get(f"{AC}/api/3/contacts", json={"contacts": page1, "meta": {"total": "101"}})
    responses.get(f"{AC}/api/3/contacts", json={"contacts": page2, "meta": {"total": "101"}})
    assert len(list(ac.contacts_with_tag(9))) == 101
    assert "offset=100" in responses.calls[1].request.url


@responses.activate
def test_klcode_client(kl: KlCodeClient) -> None:
    responses.get(
        f"{KL}/api/v1/customers",
        json={"customers": [{"id": 1042, "email": "jane@x.com", "tags": ["A"]}]},
    )
    responses.post(f"{KL}/api/v1/customers/1042/tags", status=201, json={})
    responses.post(f"{KL}/api/v1/customers/1042/tags", status=200, json={})
    responses.delete(f"{KL}/api/v1/customers/1042/tags/VIP%20Customer%2F1", status=204)
    responses.delete(f"{KL}/api/v1/customers/1042/tags/VIP%20Customer%2F1", status=404, json={})
    c = kl.find_customer("JANE@x.com")
    assert c is not None and c.id == 1042 and c.tags == ("A",)
    assert kl.add_tag(1042, "VIP Customer") is True
    assert kl.add_tag(1042, "VIP Customer") is False
    assert kl.remove_tag(1042, "VIP Customer/1") is True
    assert kl.remove_tag(1042, "VIP Customer/1") is False
    assert responses.calls[0].request.headers["Authorization"] == "Bearer key"


@responses.activate
def test_klcode_429_is_transient_with_retry_after(kl: KlCodeClient, no_sleep: list[float]) -> None:
    for _ in range(3):
        responses.get(f"{KL}/api/v1/tags", status=429, headers={"Retry-After": "1"})
    with pytest.raises(KlCodeTransientError) as exc:
        kl.list_tags()
    assert exc.value.retry_after == 1.0 and no_sleep == [1.0, 1.0]
