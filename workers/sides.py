"""Each system as the sync engine sees it: find a customer by email, add or remove a tag.

Lookups are cached in Redis, shared by all workers, so that a steady-state add costs one AC
request and a removal of a tag we added costs one as well (the contactTag id is remembered).
"""

from __future__ import annotations

import logging
from typing import Protocol

from redis import Redis

from mapping_store import Mapping

from .acindex import ACContactIndex
from .activecampaign import ACContactMissing, ActiveCampaignClient
from .errors import ContactNotFound
from .klcode import KlCodeClient

log = logging.getLogger(__name__)

ID_CACHE_TTL = 24 * 3600  # seconds: email -> contact/customer id rarely changes
CONTACT_TAG_TTL = 7 * 24 * 3600  # seconds: (contact, tag) -> contactTag id, checked on use


class Side(Protocol):
    system: str

    def tag_name(self, mapping: Mapping) -> str: ...

    def apply(self, mapping: Mapping, email: str, op: str) -> bool:
        """Make the customer hold (add) or lack (remove) the tag; True if anything changed.

        Raises:
            ContactNotFound: no customer with this email on this side.
        """
        ...


class ACSide:
    system = "ac"

    def __init__(self, client: ActiveCampaignClient, redis: Redis) -> None:
        self.client = client
        self.redis = redis
        self.index = ACContactIndex(redis, client)

    def tag_name(self, mapping: Mapping) -> str:
        return mapping.ac_tag_name

    def _ct_key(self, contact_id: int, tag_id: int) -> str:
        return f"tagsync:ac:contacttag:{contact_id}:{tag_id}"

    def contact_id(self, email: str, *, fresh: bool = False) -> int:
        if not fresh:
            cached = self.index.get(email)
            if cached:
                return cached
        cid = self.client.find_contact_id(email)
        if cid is None:
            self.index.forget(email)
            raise ContactNotFound(
                f"no ActiveCampaign contact with this email ({email.partition('@')[2]})"
            )
        self.index.set(email, cid)
        return cid

    def apply(self, mapping: Mapping, email: str, op: str) -> bool:
        return (
            self.add(email, mapping.ac_tag_id)
            if op == "add"
            else self.remove(email, mapping.ac_tag_id)
        )

    def add(self, email: str, tag_id: int) -> bool:
        cid = self.contact_id(email)
        try:
            ct_id, created = self.client.add_contact_tag(cid, tag_id)
        except ACContactMissing:
            # The cached contact was deleted (or merged) in AC: look the email up once more.
            cid = self.contact_id(email, fresh=True)
            ct_id, created = self.client.add_contact_tag(cid, tag_id)
        if ct_id is not None:
            self.redis.set(self._ct_key(cid, tag_id), ct_id, ex=CONTACT_TAG_TTL)
        return created

    def remove(self, email: str, tag_id: int) -> bool:
        cid = self.contact_id(email)
        key = self._ct_key(cid, tag_id)
        cached = self.redis.get(key)
        if cached and self.client.delete_contact_tag(int(cached)):
            self.redis.delete(key)
            return True
        # No remembered association, or it was gone (removed, maybe re-added under a new id).
        ct_id = self.client.contact_tags(cid).get(tag_id)
        self.redis.delete(key)
        if ct_id is None:
            return False
        return self.client.delete_contact_tag(ct_id)


class KlCodeSide:
    system = "klcode"

    def __init__(self, client: KlCodeClient, redis: Redis) -> None:
        self.client = client
        self.redis = redis

    def tag_name(self, mapping: Mapping) -> str:
        return mapping.klcode_tag

    def customer_id(self, email: str) -> int:
        key = f"tagsync:kl:customer:{email}"
        cached = self.redis.get(key)
        if cached:
            return int(cached)
        customer = self.client.find_customer(email)
        if customer is None:
            raise ContactNotFound(f"no KlCode customer with this email ({email.partition('@')[2]})")
        self.redis.set(key, customer.id, ex=ID_CACHE_TTL)
        return customer.id

    def apply(self, mapping: Mapping, email: str, op: str) -> bool:
        cid = self.customer_id(email)
        if op == "add":
            return self.client.add_tag(cid, mapping.klcode_tag)
        return self.client.remove_tag(cid, mapping.klcode_tag)
