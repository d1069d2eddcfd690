"""The one place outbound HTTP happens: timeouts, error mapping and transient retries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from .errors import PermanentError, SyncError, TransientError
from .retry import HTTP_ATTEMPTS, transient_retry

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BODY_IN_MESSAGE = 200  # characters of an error body quoted in exception messages


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; dates are treated as 'unknown')."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


@dataclass
class Response:
    status: int
    body: Any  # parsed JSON, or None
    headers: dict[str, str] = field(default_factory=dict)


class JsonApiClient:
    """Base of the thin clients: one Session, a timeout on every call, typed errors.

    Subclasses set `system`, the error classes, and may override `_before_request` (rate
    limiting) and `_on_error` (e.g. AC's 429 pauses every worker).
    """

    system = "api"
    transient_error: type[TransientError] = TransientError
    permanent_error: type[PermanentError] = PermanentError

    def __init__(
        self,
        *,
        session: requests.Session,
        base_url: str,
        timeout: float,
        attempts: int = HTTP_ATTEMPTS,
        on_request: Callable[[str, int | str], None] | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.on_request = on_request
        self.request_count = 0
        self._send_with_retry = transient_retry(attempts)(self._send)

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    def _before_request(self) -> None:
        """Hook: called before every attempt (rate limiting)."""

    def _on_error(self, exc: SyncError) -> None:
        """Hook: called for every failed attempt."""

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200, 201, 204),
        passthrough: tuple[int, ...] = (),
    ) -> Response:
        """Send one call, retrying transient failures; statuses in `passthrough` are returned."""
        return self._send_with_retry(method, path, params, json, ok, passthrough)

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        json: Any,
        ok: tuple[int, ...],
        passthrough: tuple[int, ...],
    ) -> Response:
        self._before_request()
        url = f"{self.base_url}{path}"
        self.request_count += 1
        started = time.monotonic()
        try:
            resp = self.session.request(
                method, url, params=params, json=json, headers=self._headers(), timeout=self.timeout
            )
        except requests.Timeout as exc:
            self._note(method, "timeout")
            err = self.transient_error(
                f"{self.system} {method} {path}: timed out after {self.timeout:.0f} s",
                reason="timeout",
            )
            self._on_error(err)
            raise err from exc
        except requests.RequestException as exc:
            self._note(method, "connection_error")
            err = self.transient_error(
                f"{self.system} {method} {path}: {type(exc).__name__}", reason="connection"
            )
            self._on_error(err)
            raise err from exc
        self._note(method, resp.status_code)
        log.debug(
            "%s %s %s -> %s in %.0f ms",
            self.system,
            method,
            path,
            resp.status_code,
            (time.monotonic() - started) * 1000,
        )
        body = _json_or_none(resp)
        if resp.status_code in ok or resp.status_code in passthrough:
            return Response(resp.status_code, body, dict(resp.headers))
        snippet = resp.text[:MAX_BODY_IN_MESSAGE].replace("\n", " ")
        message = f"{self.system} {method} {path}: HTTP {resp.status_code} {snippet}"
        if resp.status_code in TRANSIENT_STATUSES:
            err: SyncError = self.transient_error(
                message,
                status=resp.status_code,
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                reason="rate_limited" if resp.status_code == 429 else f"http_{resp.status_code}",
            )
        else:
            err = self.permanent_error(
                message, status=resp.status_code, reason=f"http_{resp.status_code}"
            )
        self._on_error(err)
        raise err

    def _note(self, method: str, status: int | str) -> None:
        if self.on_request is not None:
            self.on_request(method, status)


def _json_or_none(resp: requests.Response) -> Any:
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:  # AC answers some wrong paths with text/html
        return None
