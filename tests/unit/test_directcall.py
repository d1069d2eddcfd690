"""The receiver's direct script call on a real redis-server: lost script cache, dropped
connection and a stopped server each behave like redis-py's own call would."""

from __future__ import annotations

import time

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workers.directcall import DirectScript
from workers.embedded import EmbeddedRedis

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Redis:
    r = Redis.from_url(redis_server.url)
    r.delete("dc:n")
    return r


def test_runs_the_script_and_survives_a_script_flush(client: Redis) -> None:
    script = DirectScript(client, INCR)
    assert script(["dc:n"], [2]) == 2
    client.script_flush()  # what a Redis restart does to the cache: EVALSHA says NOSCRIPT
    assert script(["dc:n"], [3]) == 5
    assert client.script_exists(script._sha) == [True]  # EVAL cached it again


def test_a_dropped_connection_is_replaced_transparently(client: Redis) -> None:
    script = DirectScript(client, INCR)
    assert script(["dc:n"], [1]) == 1
    client.client_kill_filter(_type="normal", skipme=True)  # e.g. an idle timeout or failover
    assert script(["dc:n"], [1]) == 2


def test_script_errors_are_redis_errors(client: Redis) -> None:
    script = DirectScript(client, "return redis.call('INCRBY', KEYS[1], 'x')")
    with pytest.raises(ResponseError):
        script(["dc:n"], [])


def test_a_stopped_server_raises_connection_error(tmp_path) -> None:
    server = EmbeddedRedis(tmp_path / "r", appendonly=False)
    server.start()
    script = DirectScript(Redis.from_url(server.url, socket_timeout=1), INCR)
    assert script(["dc:n"], [1]) == 1
    server.stop()
    with pytest.raises(RedisConnectionError):  # the receiver turns it into a 503
        script(["dc:n"], [1])


SLOW_ECHO = """
if ARGV[1] == 'slow' then
  local t = redis.call('TIME')
  local start = t[1] * 1000000 + t[2]
  repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 300000
end
return ARGV[2]
"""


def test_a_reply_too_late_is_never_taken_for_the_next_calls(redis_server: EmbeddedRedis) -> None:
    script = DirectScript(Redis.from_url(redis_server.url, socket_timeout=0.1), SLOW_ECHO)
    with pytest.raises(RedisTimeoutError):  # the receiver answers 503; the sender retries
        script([], ["slow", "first"])
    time.sleep(0.4)  # the late reply has arrived by now, on the old connection
    assert script([], ["fast", "second"]) == b"second"  # not the late "first"


def test_an_interrupted_call_leaves_no_reply_for_the_next(client: Redis) -> None:
    """E.g. a gevent Timeout or a worker shutting down between the send and the reply."""

    class Interrupted(BaseException):
        pass

    script = DirectScript(client, "return ARGV[1]")
    assert script([], ["warm"]) == b"warm"  # connected, handshake done, script cached
    conn = script._connection()
    real_read = conn.read_response
    calls = []

    def read_once_interrupted(*a: object, **kw: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise Interrupted
        return real_read(*a, **kw)

    conn.read_response = read_once_interrupted  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        script([], ["first"])  # its reply is on the wire, unread
    assert script([], ["second"]) == b"second"
