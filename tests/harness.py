"""Real parts for integration and e2e tests: gunicorn, `tagsync worker` processes, HTTP stand-ins.

Each test gets a fresh stack (receiver + workers) on a session-wide redis-server that is
flushed in between (fixtures in tests/conftest.py). The stand-ins send real echo webhooks to
the real receiver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from redis import Redis
from sqlalchemy import text

from mapping_store import Store
from mapping_store.models import Base
from sandbox import Sandbox
from webhooks.cli import GUNICORN_SETTINGS
from webhooks.signatures import sign
from workers.acindex import ACContactIndex
from workers.config import Settings
from workers.context import ac_client
from workers.embedded import EmbeddedRedis, free_port
from workers.queueing import INBOX_KEY, read_record

SECRET = "it-klcode-secret"
TOKEN = "it-ac-token"
QUEUE = "tagsync-events"
INBOX = INBOX_KEY.format(queue=QUEUE)
START_TIMEOUT = 20.0


def wait_for(
    cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", *, poll: float = 0.05
) -> Any:
    """Poll until `cond()` is truthy, failing after `timeout` seconds; never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def reset_database(url: str) -> None:
    """Drop tagsync's tables from a shared test PostgreSQL, so each user starts empty."""
    store = Store(url)
    Base.metadata.drop_all(store.engine)
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS tagsync_schema_lock"))
    store.dispose()


class RestartableRedis:
    """A redis-server of a test's own, to stop and start again (same port, same data)."""

    def __init__(self, path: Path, *, appendonly: bool) -> None:
        self.path, self.appendonly = path, appendonly
        self.server = EmbeddedRedis(path, appendonly=appendonly)
        self.server.start()
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()  # SIGTERM: redis-server flushes its AOF and exits

    def start_again(self) -> None:
        self.server.stop()
        self.server = EmbeddedRedis(self.path, port=self.server.port, appendonly=self.appendonly)
        self.server.start()


@contextmanager
def stack_on_own_redis(
    tmp: Path, *, appendonly: bool, workers: int
) -> Iterator[tuple[RestartableRedis, Stack]]:
    """A Stack on a Redis the test may stop and restart; both stopped at the end."""
    redis = RestartableRedis(tmp / "redis", appendonly=appendonly)
    path = tmp / "stack"
    path.mkdir()
    try:
        stack = Stack(path, redis.url, workers=workers)
        try:
            yield redis, stack
        finally:
            stack.stop()
    finally:
        redis.stop()


class Stack:
    """Sandbox stand-ins + gunicorn receiver + N worker processes, on one Redis and one store."""

    def __init__(
        self,
        tmp: Path,
        redis_url: str,
        *,
        workers: int = 2,
        ac_rate_limit: float = 5,
        sandbox_rate_limit: float | None = 5,
        extra_env: dict[str, str] | None = None,
        database_url: str | None = None,
    ) -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.redis = Redis.from_url(redis_url)
        self.redis.flushdb()
        self.n_workers = workers
        self.sandbox = Sandbox(ac_rate_limit=sandbox_rate_limit, klcode_secret=SECRET).start()
        if database_url:
            reset_database(database_url)
        self.store = Store(database_url or f"sqlite:///{tmp / 'tagsync.db'}")
        self.store.init_schema()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": self.store.url,
            "TAGSYNC_DATA_DIR": str(tmp),
            "AC_API_URL": self.sandbox.ac_url,
            "AC_API_TOKEN": self.sandbox.ac.api_token,
            "AC_WEBHOOK_TOKEN": TOKEN,
            "AC_RATE_LIMIT": str(ac_rate_limit),
            "KLCODE_API_URL": self.sandbox.klcode_url,
            "KLCODE_API_KEY": self.sandbox.klcode.api_key,
            "KLCODE_WEBHOOK_SECRET": SECRET,
            **(extra_env or {}),
        }
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        # Wire both stand-ins' webhooks to our receiver, as `tagsync ac-webhook install` would.
        self.sandbox.point_klcode_webhooks(f"{self.base}/webhooks/klcode")
        self.sandbox.ac.webhooks[1] = {
            "id": 1,
            "name": "tagsync",
            "url": f"{self.base}/webhooks/activecampaign/{TOKEN}",
            "events": ["contact_tag_added", "contact_tag_removed"],
            "sources": ["public", "admin", "api", "system"],
        }

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child writes it
        proc = subprocess.Popen(
            argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp
        )
        out.close()
        self.procs.append((name, proc))
        return proc

    def start_web(self) -> None:
        self._spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                str(GUNICORN_SETTINGS),  # the production settings
                "--bind",
                f"127.0.0.1:{self.port}",
                "webhooks:create_app()",
            ],
        )
        wait_for(self._healthy, START_TIMEOUT, "the receiver to answer /healthz")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.base}/healthz", timeout=1).ok
        except requests.RequestException:
            return False

    def start_worker(self, name: str | None = None) -> subprocess.Popen[bytes]:
        return self._spawn(
            name or f"worker-{len(self.procs)}", [sys.executable, "-m", "webhooks.cli", "worker"]
        )

    def start(self) -> Stack:
        self.start_web()
        for _ in range(self.n_workers):
            self.start_worker()
        wait_for(
            lambda: self.redis.scard("rq:workers") >= self.n_workers,
            START_TIMEOUT,
            "workers to register",
        )
        return self

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.sandbox.stop()
        self.store.dispose()

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log"))
        )

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `tagsync ARGS` as ops would, against this stack."""
        return subprocess.run(
            [sys.executable, "-m", "webhooks.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- data -----------------------------------------------------------------------------

    def map(self, tag: str, direction: str = "bidirectional", *, active: bool = True) -> int:
        ac_id = self.sandbox.ac.add_tag(tag)
        return self.store.create_mapping(
            klcode_tag=tag, ac_tag_id=ac_id, ac_tag_name=tag, direction=direction, active=active
        ).id

    def customer(self, email: str, *, in_ac: bool = True, in_klcode: bool = True) -> str:
        if in_klcode:
            self.sandbox.klcode.add_customer(email)
        if in_ac:
            self.sandbox.ac.add_contact(email)
        return email

    def klcode_tag(self, email: str, tag: str, op: str = "add") -> None:
        cid = self.sandbox.klcode.customer_by_email(email)
        assert cid is not None
        assert self.sandbox.klcode.set_tag(cid, tag, op)

    def ac_tag(self, email: str, tag: str, op: str = "add") -> None:
        state = self.sandbox.ac
        cid, tid = state.contact_by_email(email), state.add_tag(tag)
        assert cid is not None
        if op == "add":
            state.tag_contact(cid, tid, source="admin")
        else:
            ctid = state.contact_tag(cid, tid)
            assert ctid is not None and state.untag_contact_tag(ctid, source="admin")

    def post_klcode(self, body: Any) -> requests.Response:
        data = json.dumps(body).encode()
        return requests.post(
            f"{self.base}/webhooks/klcode",
            data=data,
            timeout=5,
            headers={"Content-Type": "application/json", "X-KlCode-Signature": sign(SECRET, data)},
        )

    @staticmethod
    def kl_event(
        email: str, tag: str, op: str, at: float, event_id: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": event_id or f"evt_{uuid.uuid4().hex[:12]}",
            "type": "customer.tag_added" if op == "add" else "customer.tag_removed",
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
            + f".{int(at % 1 * 1000):03d}Z",
            "customer": {"id": 1, "email": email},
            "tag": {"name": tag},
        }

    # -- observation ----------------------------------------------------------------------

    def waiting(self) -> int:
        """Events durable in Redis, not yet started: in the inbox (until a pump takes them)
        or queued as jobs."""
        records = self.redis.lrange(INBOX, 0, -1)
        inbox = sum(len(read_record(r)) for r in records)
        return inbox + self.redis.llen(f"rq:queue:{QUEUE}")

    def busy(self) -> bool:
        started = self.redis.zcard(f"rq:wip:{QUEUE}") or self.redis.zcard(f"rq:started:{QUEUE}")
        return bool(self.redis.llen(INBOX) or self.redis.llen(f"rq:queue:{QUEUE}") or started)

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until no webhook is in flight and no job queued or running, twice in a row."""
        quiet = 0
        deadline = time.monotonic() + timeout
        while quiet < 3:
            if time.monotonic() > deadline:
                raise AssertionError("the system did not settle\n" + self.logs())
            idle = self.sandbox.idle(0.5) and not self.busy()
            quiet = quiet + 1 if idle else 0
            time.sleep(0.1)

    def index_ac_contacts(self) -> None:
        """Build the AC contact index as the scheduler would; set-up, so outside the stand-in's
        rate limit."""
        limit, self.sandbox.ac.rate_limit = self.sandbox.ac.rate_limit, None
        try:
            client = ac_client(Settings.from_env(self.env), None)
            ACContactIndex(self.redis, client).refresh(full=True)
        finally:
            self.sandbox.ac.rate_limit = limit

    def wait_in_ac(self, tag: str, emails: list[str], timeout: float) -> None:
        """Wait until every one of `emails` has `tag` in the AC stand-in."""
        wait_for(
            lambda: all(tag in self.sandbox.ac.tags_of(e) for e in emails),
            timeout,
            f"{tag!r} in AC for all {len(emails)} contacts",
        )

    def outcomes(self, email: str) -> list[tuple[str, str, str]]:
        return sorted((e.source, e.op or "", e.outcome) for e in self.store.sync_log(email=email))
