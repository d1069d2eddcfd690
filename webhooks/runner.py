"""`tagsync run`: one process tree for one machine, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

import click
import requests

from mapping_store import DuplicateMapping, Store
from workers.activecampaign import ActiveCampaignClient
from workers.config import Settings
from workers.embedded import EmbeddedRedis, free_port
from workers.mappings import create_mapping

from .cli import SANDBOX_MAPPINGS, install_ac_webhook, random_secret

READY_TIMEOUT = 30.0  # seconds for the web process to answer /healthz
SANDBOX_FILE = "sandbox.json"  # read back by Settings.from_env in other terminals


class Runner:
    def __init__(self, settings: Settings, *, n_workers: int, port: int) -> None:
        self.settings = settings
        self.n_workers = n_workers
        self.port = port
        self.redis: EmbeddedRedis | None = None
        self.sandbox: Any = None
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._stopping = False

    def run(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            env = self._prepare()
            self._start_children(env)
            self._banner(env)
            self._watch()
        finally:
            self.stop()

    def _on_signal(self, *_: Any) -> None:
        self._stopping = True

    def _prepare(self) -> dict[str, str]:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        env: dict[str, str] = {
            "TAGSYNC_DATA_DIR": str(s.data_dir.resolve()),
            "PORT": str(self.port),
        }
        if not s.redis_url:
            self.redis = EmbeddedRedis(s.data_dir)
            env["REDIS_URL"] = self.redis.start()
        if not s.database_url:
            env["DATABASE_URL"] = s.effective_database_url
        sandbox_mode = not (s.ac_api_url and s.klcode_api_url)
        if sandbox_mode:
            env.update(self._start_sandbox())
        else:
            for name in ("KLCODE_WEBHOOK_SECRET", "AC_WEBHOOK_TOKEN", "ADMIN_TOKEN"):
                if not os.environ.get(name):
                    click.echo(f"warning: {name} is not set", err=True)
        self.env = {**os.environ, **env}
        self.sandbox_mode = sandbox_mode
        return env

    def _start_sandbox(self) -> dict[str, str]:
        from sandbox import Sandbox  # noqa: PLC0415 - only in sandbox mode

        s = self.settings
        secret = s.klcode_webhook_secret or random_secret()
        token = s.ac_webhook_token or random_secret()
        admin = s.admin_token or random_secret()

        def port_or_free(p: int) -> int:
            try:
                import socket  # noqa: PLC0415

                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
                return p
            except OSError:
                return free_port()

        self.sandbox = Sandbox(
            ac_port=port_or_free(self.port + 101),
            klcode_port=port_or_free(self.port + 102),
            klcode_secret=secret,
        ).start()
        receiver = f"http://127.0.0.1:{self.port}"
        self.sandbox.point_klcode_webhooks(f"{receiver}/webhooks/klcode")
        ac = ActiveCampaignClient(
            session=requests.Session(),
            base_url=self.sandbox.ac_url,
            api_token=self.sandbox.ac.api_token,
            timeout=5,
        )
        install_ac_webhook(
            ac, f"{receiver}/webhooks/activecampaign/{token}", echo=lambda _msg: None
        )
        store = Store(replace(s).effective_database_url)
        store.init_schema()
        for tag, direction in SANDBOX_MAPPINGS:
            ac_id = self.sandbox.ac.tag_by_name(tag)
            with contextlib.suppress(DuplicateMapping):  # kept from an earlier run
                create_mapping(store, ac, klcode_tag=tag, ac_tag_id=ac_id, direction=direction)
        store.dispose()
        # Where `tagsync demo` finds the stand-ins (public sandbox credentials only).
        (s.data_dir / SANDBOX_FILE).write_text(
            json.dumps(
                {
                    "ac_url": self.sandbox.ac_url,
                    "ac_api_token": self.sandbox.ac.api_token,
                    "klcode_url": self.sandbox.klcode_url,
                    "klcode_api_key": self.sandbox.klcode.api_key,
                }
            )
        )
        return {
            "AC_API_URL": self.sandbox.ac_url,
            "AC_API_TOKEN": self.sandbox.ac.api_token,
            "AC_WEBHOOK_TOKEN": token,
            "KLCODE_API_URL": self.sandbox.klcode_url,
            "KLCODE_API_KEY": self.sandbox.klcode.api_key,
            "KLCODE_WEBHOOK_SECRET": secret,
            "ADMIN_TOKEN": admin,
        }

    def _start_children(self, env: dict[str, str]) -> None:
        from .cli import _gunicorn_argv  # noqa: PLC0415

        log_dir = self.settings.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        web = _gunicorn_argv("127.0.0.1", self.port, 2)
        self._spawn("web", web, log_dir / "web.log")
        self._spawn(
            "scheduler",
            [sys.executable, "-m", "webhooks.cli", "scheduler"],
            log_dir / "scheduler.log",
        )
        for i in range(self.n_workers):
            self._spawn(
                f"worker-{i + 1}",
                [sys.executable, "-m", "webhooks.cli", "worker"],
                log_dir / f"worker-{i + 1}.log",
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            if self._stopping or any(p.poll() is not None for _, p in self.children):
                break
            time.sleep(0.1)
        raise click.ClickException(f"the web process did not start; see {log_dir / 'web.log'}")

    def _spawn(self, name: str, argv: list[str], log_path: Any) -> None:
        out = open(log_path, "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        self.children.append((name, proc))

    def _banner(self, env: dict[str, str]) -> None:
        base = f"http://127.0.0.1:{self.port}"
        lines = ["", "tagsync is running"]
        if self.sandbox_mode:
            lines.append(
                "  *** SANDBOX MODE: local stand-ins of AC and KlCode, no real accounts ***"
            )
            lines.append(f"  AC stand-in:      {self.sandbox.ac_url}   (try POST /_sandbox/tag)")
            lines.append(
                f"  KlCode stand-in:  {self.sandbox.klcode_url}   (try POST /_sandbox/tag)"
            )
            lines.append(f"  admin token:      {env['ADMIN_TOKEN']}")
        lines.append(f"  admin page:       {base}/   (any user name; the admin token as password)")
        lines += [
            f"  receiver:         {base}/webhooks/klcode, {base}/webhooks/activecampaign/<token>",
            f"  health:           {base}/healthz, {base}/readyz",
            f"  redis:            {env.get('REDIS_URL', self.settings.redis_url)}"
            + ("  (embedded)" if self.redis else ""),
            f"  workers:          {self.n_workers}; logs in {self.settings.data_dir / 'logs'}",
            "  Ctrl-C stops everything.",
            "",
        ]
        click.echo("\n".join(lines))

    def _watch(self) -> None:
        while not self._stopping:
            for name, proc in self.children:
                if proc.poll() is not None:
                    click.echo(
                        f"tagsync: {name} exited with {proc.returncode}; stopping everything",
                        err=True,
                    )
                    return
            time.sleep(0.2)

    def stop(self) -> None:
        for _, proc in self.children:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.children.clear()
        if self.sandbox is not None:
            (self.settings.data_dir / SANDBOX_FILE).unlink(missing_ok=True)
            self.sandbox.stop()
            self.sandbox = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
