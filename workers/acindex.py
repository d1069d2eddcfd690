"""An email -> contact id index of the AC account, shared in Redis.

Bulk import creates contacts it does not know, so only emails known to exist in AC may go that
way; and a steady-state tag write needs the contact id without a lookup. The index is built by
paging every contact (id order, 100 a page), kept fresh with `filters[updated_after]`, and fed
by every lookup the workers make. A contact deleted in AC lingers until the daily rebuild; a
write to it answers 404 and the entry is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timezone

from redis import Redis

from .activecampaign import ActiveCampaignClient

log = logging.getLogger(__name__)

KEY = "tagsync:ac:index"
META = "tagsync:ac:index:meta"
LOCK = "tagsync:ac:index:lock"
REBUILD_EVERY = 24 * 3600  # seconds between full rebuilds (drops deleted contacts)
FRESH_FOR = 60  # seconds an incremental refresh is good for
OVERLAP = 120  # seconds of updated_after overlap, for clock differences with AC
LOCK_TTL = 1800  # seconds: a full rebuild of a large account pages for a while


class ACContactIndex:
    def __init__(self, redis: Redis, ac: ActiveCampaignClient) -> None:
        self.redis = redis
        self.ac = ac

    # -- single entries (the workers' cache) -----------------------------------------------

    def get(self, email: str) -> int | None:
        raw = self.redis.hget(KEY, email)
        return int(raw) if raw else None

    def set(self, email: str, contact_id: int) -> None:
        self.redis.hset(KEY, email, contact_id)

    def forget(self, email: str) -> None:
        self.redis.hdel(KEY, email)

    def lookup(self, emails: Iterable[str]) -> dict[str, int]:
        """Known contact ids for these emails (no API calls)."""
        wanted = list(emails)
        out: dict[str, int] = {}
        for i in range(0, len(wanted), 1000):
            chunk = wanted[i : i + 1000]
            for email, raw in zip(chunk, self.redis.hmget(KEY, chunk), strict=True):
                if raw:
                    out[email] = int(raw)
        return out

    # -- whole-account refresh ---------------------------------------------------------------

    def refresh(self, *, full: bool = False) -> int:
        """Bring the index up to date; returns the AC pages read (0 if fresh or busy)."""
        meta = {k.decode(): float(v) for k, v in self.redis.hgetall(META).items()}
        now = time.time()
        rebuild = full or now - meta.get("built_at", 0) > REBUILD_EVERY
        if not rebuild and now - meta.get("synced_at", 0) < FRESH_FOR:
            return 0
        if not self.redis.set(LOCK, "1", nx=True, ex=LOCK_TTL):
            return 0  # another process is refreshing; use what is there
        try:
            return self._rebuild(now) if rebuild else self._catch_up(now, meta["synced_at"])
        finally:
            self.redis.delete(LOCK)

    def _rebuild(self, now: float) -> int:
        tmp, pages, last = f"{KEY}:building", 0, 0
        self.redis.delete(tmp)
        while True:
            page = self.ac.contacts_after(last)
            pages += 1
            if not page:
                break
            self.redis.hset(
                tmp, mapping={email.strip().lower(): cid for cid, email in page if email}
            )
            last = page[-1][0]
        if self.redis.exists(tmp):
            self.redis.rename(tmp, KEY)
        else:
            self.redis.delete(KEY)
        self.redis.hset(META, mapping={"built_at": now, "synced_at": now})
        log.info("AC contact index rebuilt: %d contacts, %d pages", self.redis.hlen(KEY), pages)
        return pages

    def _catch_up(self, now: float, since: float) -> int:
        when = datetime.fromtimestamp(since - OVERLAP, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S+00:00"
        )
        changed = {
            email.strip().lower(): cid
            for cid, email in self.ac.contacts_updated_after(when)
            if email
        }
        if changed:
            self.redis.hset(KEY, mapping=changed)
        self.redis.hset(META, "synced_at", now)
        return max(1, -(-len(changed) // 100))
