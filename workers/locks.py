"""A Redis lock that lives only as long as its holder: short TTL, renewed while held."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis

from .errors import LockTimeout

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class Locks:
    """Named locks in one Redis. A holder that dies loses its lock within `ttl` seconds."""

    def __init__(self, redis: Redis, *, ttl: float) -> None:
        self.redis = redis
        self.ttl = ttl
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    def try_acquire(self, key: str) -> str | None:
        token = uuid.uuid4().hex
        return token if self.redis.set(key, token, nx=True, px=int(self.ttl * 1000)) else None

    def renew(self, key: str, token: str) -> bool:
        """Extend a lock still held with `token` by another TTL; False if it was lost."""
        return bool(self._renew(keys=[key], args=[token, int(self.ttl * 1000)]))

    def release(self, key: str, token: str) -> None:
        self._release(keys=[key], args=[token])

    @contextmanager
    def hold(self, key: str, *, wait: float = 0.0, what: str = "lock") -> Iterator[None]:
        """Hold `key` for the block, waiting up to `wait` seconds for it.

        Raises:
            LockTimeout: still held by someone else after `wait` seconds.
        """
        deadline = time.monotonic() + wait
        delay = 0.01
        while (token := self.try_acquire(key)) is None:
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{what} busy for {wait:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        released = threading.Event()
        keeper = threading.Thread(target=self._keep, args=(key, token, released), daemon=True)
        keeper.start()
        try:
            yield
        finally:
            released.set()
            keeper.join(timeout=1)
            self.release(key, token)

    def _keep(self, key: str, token: str, released: threading.Event) -> None:
        # Work under the lock (HTTP retries, rate-limit waits) can outlast the TTL.
        while not released.wait(self.ttl / 3):
            try:
                if not self.renew(key, token):
                    log.warning("lost lock %s (it expired while held)", key)
                    return
            except Exception:  # a Redis blip: the next beat retries while the TTL still covers us
                log.warning("could not renew lock %s", key, exc_info=True)
