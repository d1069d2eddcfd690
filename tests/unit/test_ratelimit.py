from __future__ import annotations

import time

import fakeredis
import pytest

from workers.ratelimit import RateLimiter, RateLimitTimeout


def test_grants_at_most_limit_per_window() -> None:
    limiter = RateLimiter(fakeredis.FakeRedis(), key="rl", rate=5, max_wait=0.01)
    for _ in range(5):
        assert limiter.acquire() < 0.01
    with pytest.raises(RateLimitTimeout):
        limiter.acquire()


def test_waits_for_the_window_to_slide() -> None:
    limiter = RateLimiter(fakeredis.FakeRedis(), key="rl", rate=20, max_wait=5)
    start = time.monotonic()
    for _ in range(25):
        limiter.acquire()
    elapsed = time.monotonic() - start
    assert elapsed >= 1.0  # 20 in the first window, 5 more only after it slides
    assert limiter.stats.waits >= 1


def test_shared_between_limiter_instances() -> None:
    redis = fakeredis.FakeRedis()
    a = RateLimiter(redis, key="rl", rate=3, max_wait=0.01)
    b = RateLimiter(redis, key="rl", rate=3, max_wait=0.01)
    a.acquire()
    b.acquire()
    a.acquire()
    with pytest.raises(RateLimitTimeout):
        b.acquire()


def test_block_pauses_everyone() -> None:
    redis = fakeredis.FakeRedis()
    limiter = RateLimiter(redis, key="rl", rate=100, max_wait=0.05)
    limiter.block(2)
    with pytest.raises(RateLimitTimeout):
        limiter.acquire()


def test_fractional_rates() -> None:
    limiter = RateLimiter(fakeredis.FakeRedis(), key="rl", rate=0.5, max_wait=0.01)
    assert (limiter.limit, limiter.window_ms) == (1, int(2000 * 1.03))
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(fakeredis.FakeRedis(), key="rl", rate=0)


def test_background_leaves_room_for_realtime() -> None:
    redis = fakeredis.FakeRedis()
    realtime = RateLimiter(redis, key="rl", rate=5, max_wait=0.01)
    background = RateLimiter(redis, key="rl", rate=5, max_wait=0.01, priority="low")
    for _ in range(3):
        background.acquire()
    realtime.acquire()  # real-time is now active
    with pytest.raises(RateLimitTimeout):
        background.acquire()  # 4 of 5 used; background may only use 5 - 2 while real-time is busy
    realtime.acquire()
    with pytest.raises(RateLimitTimeout):
        realtime.acquire()


def test_background_alone_uses_the_whole_budget() -> None:
    background = RateLimiter(fakeredis.FakeRedis(), key="rl", rate=5, max_wait=0.01, priority="low")
    for _ in range(5):
        background.acquire()
    with pytest.raises(RateLimitTimeout):
        background.acquire()


def test_after_a_429_the_window_is_wider_for_everyone() -> None:
    redis = fakeredis.FakeRedis()
    a = RateLimiter(redis, key="rl", rate=20, max_wait=5)
    b = RateLimiter(redis, key="rl", rate=20, max_wait=5)

    def time_for_25(limiter: RateLimiter) -> float:
        redis.delete("rl")
        start = time.monotonic()
        for _ in range(25):
            limiter.acquire()
        return time.monotonic() - start

    normal = time_for_25(a)
    a.block(0.001)  # AC answered 429 to a's process
    time.sleep(0.01)
    cautious = time_for_25(b)  # another process slows down too
    assert 1.0 <= normal < 1.1  # 20 at once, 5 more when the 1.03 s window slides
    assert cautious >= 1.03 * 1.15 - 0.01
    assert redis.ttl("rl:cautious") > 500
