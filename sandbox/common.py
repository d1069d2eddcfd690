"""Shared parts of the stand-ins: serving in a thread, request stats, async webhook delivery."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Flask, Response, jsonify, redirect, render_template_string, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # one line per request is noise here
        pass


class ServerThread:
    """A real HTTP server (werkzeug, threaded) on loopback, run in a daemon thread."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_QuietHandler
        )
        self.host = host
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@dataclass
class Stats:
    """What a stand-in saw: requests by route and status, writes, and per-second peaks."""

    requests: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    writes: Counter = field(default_factory=Counter)
    webhooks_sent: int = 0
    webhooks_failed: int = 0
    delivery_failures: int = 0  # failed attempts, retried or not
    arrivals: deque = field(default_factory=lambda: deque(maxlen=100_000))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note_request(self, route: str) -> None:
        with self.lock:
            self.requests[route] += 1
            self.arrivals.append(time.monotonic())

    def note_status(self, status: int) -> None:
        with self.lock:
            self.statuses[str(status)] += 1

    def note_write(self, kind: str) -> None:
        with self.lock:
            self.writes[kind] += 1

    def max_in_window(self, window: float = 1.0) -> int:
        """The most requests that arrived within any `window` seconds."""
        with self.lock:
            times = list(self.arrivals)
        best, j = 0, 0
        for i, t in enumerate(times):
            while t - times[j] >= window:
                j += 1
            best = max(best, i - j + 1)
        return best

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.statuses.clear()
            self.writes.clear()
            self.arrivals.clear()
            self.webhooks_sent = 0
            self.webhooks_failed = 0

    def to_dict(self) -> dict[str, Any]:
        peak = self.max_in_window()
        with self.lock:
            return {
                "requests": dict(self.requests),
                "total_requests": sum(self.requests.values()),
                "statuses": dict(self.statuses),
                "writes": dict(self.writes),
                "webhooks_sent": self.webhooks_sent,
                "webhooks_failed": self.webhooks_failed,
                "max_requests_per_second": peak,
            }


@dataclass
class Faults:
    """Injected misbehaviour: answer `status` to the next `count` API calls or for `until`,
    and/or delay every call by `delay` seconds (a slow server)."""

    status: int | None = None
    count: int = 0
    until: float = 0.0
    delay: float = 0.0
    retry_after: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Faults:
        return cls(
            status=body.get("status"),
            count=int(body.get("count", 0)),
            until=time.time() + float(body.get("seconds", 0)),
            delay=float(body.get("delay", 0)),
            retry_after=body.get("retry_after"),
        )

    def injected(self) -> tuple[int, str | None] | None:
        """The (status, Retry-After) to answer now instead of serving, if any. Call under a lock."""
        if self.status and (self.count > 0 or time.time() < self.until):
            self.count = max(0, self.count - 1)
            return self.status, self.retry_after
        return None


def fault_response(
    status: int, retry_after: str | None, body: dict[str, Any]
) -> tuple[Response, int]:
    resp = jsonify(body)
    if retry_after:
        resp.headers["Retry-After"] = retry_after
    return resp, status


def add_controls(app: Flask, state: Any, *, api_prefix: str) -> None:
    """Shared by both stand-ins: answer counting, and the sandbox-only stats and fault routes."""

    @app.after_request
    def count(resp: Response) -> Response:
        if request.path.startswith(api_prefix):
            state.stats.note_status(resp.status_code)
        return resp

    @app.get("/_sandbox/stats")
    def stats() -> Response:
        return jsonify(state.stats.to_dict())

    @app.post("/_sandbox/stats/reset")
    def reset_stats() -> Response:
        state.stats.reset()
        return jsonify({"status": "ok"})

    @app.post("/_sandbox/faults")
    def faults() -> Response:
        body = request.get_json(silent=True) or {}
        with state.lock:
            state.faults = Faults.from_json(body)
            if "rate_limit" in body and hasattr(state, "rate_limit"):
                state.rate_limit = body["rate_limit"]
        return jsonify({"status": "ok"})


ADMIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}
.tag{background:#eef;border-radius:3px;padding:1px 5px;margin-right:3px}</style></head><body>
<h1>{{ title }}</h1><p>A local stand-in for tagsync's sandbox: tag or untag a customer by hand, as a
person in the real system would; the change fires a webhook like the real one.</p>
<form method="post" action="/_sandbox/tag">
<select name="email">{% for email, _ in rows %}<option>{{ email }}</option>{% endfor %}</select>
<select name="tag">{% for t in tags %}<option>{{ t }}</option>{% endfor %}</select>
<button name="op" value="add">Add tag</button> <button name="op" value="remove">Remove tag</button>
</form>
<table><tr><th>customer</th><th>tags</th></tr>
{% for email, ts in rows %}<tr><td>{{ email }}</td><td>
{% for t in ts %}<span class="tag">{{ t }}</span>{% endfor %}</td></tr>{% endfor %}
</table></body></html>"""


def admin_page(title: str, rows: list[tuple[str, list[str]]], tags: list[str]) -> str:
    return render_template_string(ADMIN_PAGE, title=title, rows=rows, tags=tags)


def tag_answer(changed: bool, tags: list[str]) -> Any:
    """JSON for API callers; back to the page for the HTML form."""
    if request.is_json:
        return jsonify({"changed": changed, "tags": tags})
    return redirect("/", code=303)


class Outbox:
    """Delivers webhooks from a background thread, like the real systems do (asynchronously).

    `retries` is how many times a failed delivery is tried again (AC: never; KlCode: a few).
    """

    def __init__(
        self, stats: Stats, *, retries: int = 0, backoff: float = 1.0, timeout: float = 5.0
    ) -> None:
        self.stats = stats
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.session = requests.Session()
        self._q: queue.Queue[tuple[Callable[[], tuple[str, dict[str, Any]]], int] | None] = (
            queue.Queue()
        )
        self._pending = 0
        self._cv = threading.Condition()
        self.paused = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def send(self, build: Callable[[], tuple[str, dict[str, Any]]]) -> None:
        """Queue a delivery; `build` returns (url, requests kwargs) at send time."""
        with self._cv:
            self._pending += 1
        self._q.put((build, 0))

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery has been attempted (for tests)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._pending == 0, timeout=timeout)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            build, attempt = item
            while self.paused:
                time.sleep(0.05)
            ok = False
            try:
                url, kwargs = build()
                resp = self.session.post(url, timeout=self.timeout, **kwargs)
                ok = 200 <= resp.status_code < 300
            except requests.RequestException as exc:
                log.info("webhook delivery failed: %s", type(exc).__name__)
            if not ok:
                with self.stats.lock:
                    self.stats.delivery_failures += 1
            if not ok and attempt < self.retries:
                threading.Timer(
                    self.backoff * (2**attempt), self._q.put, args=((build, attempt + 1),)
                ).start()
                continue
            with self.stats.lock:
                if ok:
                    self.stats.webhooks_sent += 1
                else:
                    self.stats.webhooks_failed += 1
            with self._cv:
                self._pending -= 1
                self._cv.notify_all()

    def close(self) -> None:
        self._q.put(None)
