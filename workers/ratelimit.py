"""One AC rate limiter for the whole deployment, kept in Redis.

AC allows 5 requests/s per account, across every process that holds the key. A sliding-window
log (a sorted set of grant times, on Redis's own clock so hosts need not agree on the time)
guarantees at most `limit` grants in any window, which a token bucket does not: a full bucket
plus a second's refill can put 2x the limit into one second. A 429 from AC blocks every worker
for its Retry-After, and then keeps the window CAUTION_STRETCH wider for CAUTION_SECONDS: a 429
means AC counted our requests closer together than we granted them (network jitter beyond the
window's margin), and AC's Retry-After can be long, so once told, we leave more room.
Background work (reconciliation) asks with priority "low": it may use the whole budget when
real-time traffic is idle, and leaves REALTIME_SHARE of it otherwise.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis

from .errors import TransientError

log = logging.getLogger(__name__)

WINDOW_MARGIN = 1.03  # stretch the window 3 % to absorb network jitter between us and AC
DEFAULT_MAX_WAIT = 60.0  # seconds a caller waits for a permit before giving up (transient)
REALTIME_SHARE = 0.4  # of the budget kept for real-time calls while both kinds are busy
CAUTION_STRETCH = 1.15  # the window's extra width after a 429 ...
CAUTION_SECONDS = 600  # ... for this long (renewed by every further 429)

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[4]) == 1 then
  window = math.floor(window * tonumber(ARGV[6]))
end
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then
  return blocked - now
end
-- Real-time callers announce themselves; while they are active, background callers may use
-- only limit - reserve permits per window, so real-time never queues behind a reconciliation.
if ARGV[4] == 'high' then
  redis.call('SET', KEYS[3], '1', 'PX', window * 2)
elseif redis.call('EXISTS', KEYS[3]) == 1 then
  limit = math.max(1, limit - tonumber(ARGV[5]))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window * 2)
  return 0
end
local nth = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return math.max(1, tonumber(nth[2]) + window - now)
"""

_BLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > current then
  redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000)
end
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[2]))
return until_ms
"""


class RateLimitTimeout(TransientError):
    reason = "rate_limit_wait"


@dataclass
class LimiterStats:
    waits: int = 0
    waited_seconds: float = 0.0


class RateLimiter:
    """Grants at most `rate` permits per second across all processes sharing `key`."""

    def __init__(
        self,
        redis: Redis,
        *,
        key: str,
        rate: float,
        max_wait: float = DEFAULT_MAX_WAIT,
        priority: str = "high",
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        self.redis = redis
        self.key = key
        self.block_key = f"{key}:blocked"
        self.active_key = f"{key}:realtime"
        self.caution_key = f"{key}:cautious"
        if priority not in ("high", "low"):
            raise ValueError(f"priority must be 'high' or 'low', got {priority!r}")
        self.priority = priority
        # N permits per window of N/rate seconds: 5/s -> 5 per 1 s; 0.5/s -> 1 per 2 s.
        self.limit = max(1, int(rate))
        self.window_ms = int(self.limit / rate * 1000 * WINDOW_MARGIN)
        self.reserve = max(1, round(self.limit * REALTIME_SHARE)) if self.limit > 1 else 0
        self.max_wait = max_wait
        self.stats = LimiterStats()
        self.on_wait = on_wait
        self._acquire = redis.register_script(_ACQUIRE)
        self._block = redis.register_script(_BLOCK)

    def acquire(self) -> float:
        """Block until a permit is granted; return the seconds waited.

        Raises:
            RateLimitTimeout: no permit within max_wait seconds.
        """
        start = time.monotonic()
        token = uuid.uuid4().hex
        while True:
            wait_ms = int(
                self._acquire(
                    keys=[self.key, self.block_key, self.active_key, self.caution_key],
                    args=[
                        self.limit,
                        self.window_ms,
                        token,
                        self.priority,
                        self.reserve,
                        CAUTION_STRETCH,
                    ],
                )
            )
            if wait_ms <= 0:
                waited = time.monotonic() - start
                if waited > 0.001:
                    self.stats.waits += 1
                    self.stats.waited_seconds += waited
                    if self.on_wait is not None:
                        self.on_wait(waited)
                return waited
            if time.monotonic() - start + wait_ms / 1000 > self.max_wait:
                raise RateLimitTimeout(f"no AC request permit within {self.max_wait:.0f} s")
            time.sleep(wait_ms / 1000)

    def block(self, seconds: float) -> None:
        """Stop every process from calling for `seconds` (the server said Retry-After)."""
        ms = max(1, int(seconds * 1000))
        self._block(keys=[self.block_key, self.caution_key], args=[ms, CAUTION_SECONDS])
        log.warning("AC rate limit hit: all workers pause for %.1f s", seconds)
