"""The receiver's direct script call on a real redis-server: lost script cache, dropped
connection and a stopped server each behave like redis-py's own call would."""

from __future__ import annotations

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

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
