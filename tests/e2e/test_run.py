"""The README's first command, as a newcomer runs it: `tagsync run` with no configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from workers.embedded import free_port

from ..harness import wait_for

pytestmark = pytest.mark.integration

CONFIG_VARS = (
    "REDIS_URL",
    "DATABASE_URL",
    "AC_API_URL",
    "AC_API_TOKEN",
    "AC_WEBHOOK_TOKEN",
    "KLCODE_API_URL",
    "KLCODE_API_KEY",
    "KLCODE_WEBHOOK_SECRET",
    "ADMIN_TOKEN",
    "PORT",
)


def processes_of(data_dir: Path) -> list[int]:
    """Pids of live processes started with TAGSYNC_DATA_DIR pointing at `data_dir`."""
    marker = f"TAGSYNC_DATA_DIR={data_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in environ.split(b"\0") and ") Z " not in stat:  # zombies are already dead
            pids.append(int(entry.name))
    return pids


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def test_tagsync_run_syncs_within_two_seconds_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    env["TAGSYNC_DATA_DIR"] = str(data_dir)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhooks.cli", "run", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: (
                (data_dir / "sandbox.json").exists() and answers(f"http://127.0.0.1:{port}/readyz")
            ),
            60,
            "tagsync run to be ready",
        )
        sandbox = json.loads((data_dir / "sandbox.json").read_text())
        # Workers register a moment after the web process answers.
        wait_for(
            lambda: (
                b"Listening"
                in b"".join(p.read_bytes() for p in (data_dir / "logs").glob("worker-*.log"))
            ),
            30,
            "workers to listen",
        )
        email = "jane.sato12@example.com"
        started = time.monotonic()
        resp = requests.post(
            f"{sandbox['klcode_url']}/_sandbox/tag",
            json={"email": email, "tag": "VIP Customer"},
            timeout=5,
        )
        assert resp.ok and resp.json()["changed"]
        wait_for(
            lambda: (
                "VIP Customer"
                in requests.get(f"{sandbox['ac_url']}/_sandbox/contacts/{email}", timeout=2).json()[
                    "tags"
                ]
            ),
            2.0,
            "the tag in AC within 2 s",
        )
        assert time.monotonic() - started < 2.0
        demo = subprocess.run(
            [sys.executable, "-m", "webhooks.cli", "demo"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert demo.stdout.count("✓") == 4
        assert len(processes_of(data_dir)) >= 5  # run, redis, gunicorn master + 2 workers at least
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert "SANDBOX MODE" in out
    assert proc.returncode == 0, out
    assert (
        wait_for(lambda: processes_of(data_dir) == [], 10, "every child process to exit")
        is not None
    )
    assert not (data_dir / "sandbox.json").exists()
