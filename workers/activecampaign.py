"""Thin ActiveCampaign API v3 client: only what tag sync needs.

Vendor docs: https://developers.activecampaign.com/reference/overview. Facts we rely on are in
shared/activecampaign.md: ids and totals are JSON strings, a tag is removed through its
contactTag association id, re-adding a present tag answers 200, deleting a gone contactTag
answers 404, and `search=` on tags is a substring match, so names are compared exactly here.
NOTE: no SDK; the official ones do none of the above and have no rate limiting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ACPermanentError, ACTransientError, SyncError
from .http import JsonApiClient
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

PAGE_LIMIT = 100  # AC's maximum page size


@dataclass(frozen=True)
class ACTag:
    id: int
    name: str
    subscriber_count: int | None = None
    tag_type: str = "contact"


class ACContactMissing(ACPermanentError):
    """POST /contactTags named a contact AC does not have."""

    reason = "contact_not_found"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _tag(obj: dict[str, Any]) -> ACTag:
    return ACTag(
        id=int(obj["id"]),
        name=str(obj.get("tag", "")),
        subscriber_count=_int(obj.get("subscriber_count")),
        tag_type=str(obj.get("tagType") or "contact"),
    )


class ActiveCampaignClient(JsonApiClient):
    """AC API v3 over one requests.Session; every call passes the shared rate limiter."""

    system = "ac"
    transient_error = ACTransientError
    permanent_error = ACPermanentError

    def __init__(
        self, *, api_token: str, limiter: RateLimiter | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._api_token = api_token
        self.limiter = limiter

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Api-Token": self._api_token}

    def _before_request(self) -> None:
        if self.limiter is not None:
            self.limiter.acquire()

    def _on_error(self, exc: SyncError) -> None:
        if exc.status == 429 and self.limiter is not None:
            self.limiter.block(exc.retry_after if exc.retry_after is not None else 1.0)

    # -- contacts -------------------------------------------------------------------------

    def find_contact_id(self, email: str) -> int | None:
        """The id of the contact with exactly this email, or None."""
        body = self.request("GET", "/api/3/contacts", params={"email": email}).body or {}
        wanted = email.strip().lower()
        for contact in body.get("contacts") or []:
            if str(contact.get("email", "")).strip().lower() == wanted:
                return _int(contact.get("id"))
        return None

    def contact_tags(self, contact_id: int) -> dict[int, int]:
        """The contact's tags as {tag id: contactTag id}. The answer has no `meta`."""
        body = self.request("GET", f"/api/3/contacts/{contact_id}/contactTags").body or {}
        out: dict[int, int] = {}
        for row in body.get("contactTags") or []:
            tag_id, ct_id = _int(row.get("tag")), _int(row.get("id"))
            if tag_id is not None and ct_id is not None:
                out[tag_id] = ct_id
        return out

    def add_contact_tag(self, contact_id: int, tag_id: int) -> tuple[int | None, bool]:
        """Tag a contact; returns (contactTag id, created). 200 means it was already there.

        Raises:
            ACContactMissing: AC has no such contact (404 with an `errors` list).
        """
        resp = self.request(
            "POST",
            "/api/3/contactTags",
            json={"contactTag": {"contact": str(contact_id), "tag": str(tag_id)}},
            passthrough=(404,),
        )
        if resp.status == 404:
            raise ACContactMissing(f"ac: contact {contact_id} not found", status=404)
        ct = (resp.body or {}).get("contactTag") or {}
        return _int(ct.get("id")), resp.status == 201

    def delete_contact_tag(self, contact_tag_id: int) -> bool:
        """Remove a tag association; False if it was already gone (404 is success here)."""
        resp = self.request("DELETE", f"/api/3/contactTags/{contact_tag_id}", passthrough=(404,))
        return resp.status != 404

    def contacts_after(self, last_id: int) -> list[tuple[int, str]]:
        """One page of contacts with id > last_id, in id order (AC's advice for deep lists)."""
        body = (
            self.request(
                "GET",
                "/api/3/contacts",
                params={"orders[id]": "ASC", "id_greater": last_id, "limit": PAGE_LIMIT},
            ).body
            or {}
        )
        return [
            (int(c["id"]), str(c.get("email", "")))
            for c in body.get("contacts") or []
            if _int(c.get("id"))
        ]

    def contacts_updated_after(self, when: str) -> Iterator[tuple[int, str]]:
        """Every contact changed after `when` (ISO 8601), paged at 100."""
        return self._paged_contacts({"filters[updated_after]": when})

    def bulk_import(self, contacts: list[dict[str, Any]]) -> str:
        """Queue a bulk import (<= 250 contacts, tags by name); returns its batch id.

        It fires no webhooks and creates contacts it does not know: only send known emails.
        """
        body = (
            self.request("POST", "/api/3/import/bulk_import", json={"contacts": contacts}).body
            or {}
        )
        batch = body.get("batchId")
        if not batch:
            raise ACPermanentError(f"ac: bulk import answered without a batchId: {str(body)[:200]}")
        return str(batch)

    def import_info(self, batch_id: str) -> dict[str, Any]:
        return dict(
            self.request("GET", "/api/3/import/info", params={"batchId": batch_id}).body or {}
        )

    def contacts_with_tag(self, tag_id: int) -> Iterator[tuple[int, str]]:
        """Every (contact id, email) holding the tag, paged at AC's maximum of 100."""
        return self._paged_contacts({"tagid": tag_id})

    def _paged_contacts(self, params: dict[str, Any]) -> Iterator[tuple[int, str]]:
        offset = 0
        while True:
            query = {**params, "limit": PAGE_LIMIT, "offset": offset}
            body = self.request("GET", "/api/3/contacts", params=query).body or {}
            contacts = body.get("contacts") or []
            for c in contacts:
                cid = _int(c.get("id"))
                if cid is not None:
                    yield cid, str(c.get("email", ""))
            total = _int((body.get("meta") or {}).get("total"))
            offset += PAGE_LIMIT
            if not contacts or (total is not None and offset >= total):
                return

    # -- tags -----------------------------------------------------------------------------

    def get_tag(self, tag_id: int) -> ACTag | None:
        resp = self.request("GET", f"/api/3/tags/{tag_id}", passthrough=(404,))
        if resp.status == 404:
            return None
        return _tag((resp.body or {})["tag"])

    def find_tag(self, name: str) -> ACTag | None:
        """The contact tag named exactly `name` (never the first substring hit of `search=`)."""
        wanted = name.strip()
        candidates: list[ACTag] = []
        offset = 0
        while True:
            body = (
                self.request(
                    "GET",
                    "/api/3/tags",
                    params={"filters[search][eq]": wanted, "limit": PAGE_LIMIT, "offset": offset},
                ).body
                or {}
            )
            tags = [_tag(t) for t in body.get("tags") or []]
            candidates.extend(t for t in tags if t.tag_type == "contact")
            total = _int((body.get("meta") or {}).get("total"))
            offset += PAGE_LIMIT
            if not tags or total is None or offset >= total:
                break
        exact = [t for t in candidates if t.name.strip() == wanted]
        if exact:
            return exact[0]
        folded = [t for t in candidates if t.name.strip().casefold() == wanted.casefold()]
        return folded[0] if folded else None

    # -- webhooks -------------------------------------------------------------------------

    def find_webhooks(self, url: str) -> list[dict[str, Any]]:
        body = self.request("GET", "/api/3/webhooks", params={"filters[url]": url}).body or {}
        return [w for w in body.get("webhooks") or [] if w.get("url") == url]

    def create_webhook(
        self, *, name: str, url: str, events: list[str], sources: list[str]
    ) -> dict[str, Any]:
        body = (
            self.request(
                "POST",
                "/api/3/webhooks",
                json={"webhook": {"name": name, "url": url, "events": events, "sources": sources}},
            ).body
            or {}
        )
        return dict(body.get("webhook") or {})
