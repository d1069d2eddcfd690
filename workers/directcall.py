"""The receiver's one Redis call per write (and the pump's script), on a connection of its own.

The receiver makes exactly one Redis call per request, and under load that call was half of the
request's cost: redis-py's general path encodes every argument in Python, checks a connection
out of the pool (a poll() for stray data each time) and back in, and wraps it all in retry
and observability layers. Here the command is packed once in C (hiredis) and written to a
redis-py `Connection` kept for the purpose (so TLS, unix sockets, AUTH and SELECT from
REDIS_URL still work), and the reply read back: about half the CPU for the same round trip.
Calls are serialised on that connection (the group commit in front of it makes one at a time
anyway); a lock, not a per-thread connection, so gevent's per-request greenlets do not each
open one.

Failure semantics stay those of a normal call: a broken connection is dropped and the call
tried once more on a fresh one (harmless for what is sent here: an inbox record appended twice
comes out of the pump as one job and a counted duplicate, and the pump's script is idempotent);
anything else raises a RedisError.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence

from redis import Redis
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a declared dependency; stay correct without
    _hiredis_pack = None

Arg = str | bytes | int | float


class DirectConnection:
    """Commands sent one at a time on a connection of their own."""

    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool
        self._lock = threading.Lock()
        self._conn: AbstractConnection | None = None
        self._pid = 0

    def _connection(self) -> AbstractConnection:
        if self._conn is None or self._pid != os.getpid():  # never share a socket across fork
            self._conn = self._pool.connection_class(**self._pool.connection_kwargs)
            self._pid = os.getpid()
        return self._conn

    def _roundtrip(self, command: tuple[Arg, ...]) -> object:
        conn = self._connection()
        packed = [_hiredis_pack(command)] if _hiredis_pack else conn.pack_command(*command)
        try:
            conn.send_packed_command(packed, check_health=False)
            return conn.read_response()
        except ResponseError:  # a whole reply was read (NOSCRIPT, a script error): still in step
            raise
        except OSError as exc:  # redis-py wraps socket errors; be sure of it
            conn.disconnect()
            raise RedisConnectionError(str(exc)) from exc
        except BaseException:
            # A timeout, or anything else between sending and the reply: that reply may still
            # arrive, and must never be read as the next call's. Start afresh.
            conn.disconnect()
            raise

    def _call(self, command: tuple[Arg, ...]) -> object:
        try:
            return self._roundtrip(command)
        except RedisConnectionError:  # a stale connection (Redis restarted): once more, fresh
            return self._roundtrip(command)

    def command(self, *command: Arg) -> object:
        """One command and its reply (a dropped connection is retried once, fresh: only send
        commands whose repetition is harmless).

        Raises:
            redis.RedisError: it did not run, or (timeout) we cannot know whether it did.
        """
        with self._lock:
            return self._call(command)


class DirectScript(DirectConnection):
    """A Lua script called by EVALSHA (EVAL after a Redis restart lost the script cache)."""

    def __init__(self, redis: Redis, script: str) -> None:
        super().__init__(redis)
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis's script id

    def __call__(self, keys: Sequence[Arg], args: Sequence[Arg]) -> object:
        """EVALSHA on the script's own connection, one call at a time.

        Raises:
            redis.RedisError: the script did not run, or (timeout) we cannot know whether it did.
        """
        with self._lock:
            try:
                return self._call(("EVALSHA", self._sha, len(keys), *keys, *args))
            except NoScriptError:  # Redis restarted or SCRIPT FLUSH: EVAL runs and caches it
                return self._call(("EVAL", self._script, len(keys), *keys, *args))
