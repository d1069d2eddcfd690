"""The receiver: verify, validate, make durable in Redis, answer. Nothing else on this path."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import ValidationError
from redis.exceptions import RedisError

from workers.metrics import Metrics
from workers.payloads import Parsed, parse_ac, parse_klcode

from . import signatures
from .fastcheck import klcode_tag_events

log = logging.getLogger(__name__)

bp = Blueprint("receiver", __name__)

RETRY_AFTER_UNAVAILABLE = "5"  # seconds we ask a sender to wait when Redis is down


def _error(
    status: int, error: str, source: str | None = None, **extra: Any
) -> tuple[Response, int]:
    if source is not None:
        Metrics(current_app.extensions["tagsync"].redis).webhook(source, "rejected", error)
    return jsonify({"error": error, **extra}), status


def _unavailable(source: str, exc: RedisError) -> tuple[Response, int]:
    log.error("%s webhook not made durable, answering 503: %s", source, type(exc).__name__)
    resp, status = _error(503, "unavailable", detail="events could not be queued; retry later")
    Metrics(current_app.extensions["tagsync"].redis).webhook(source, "rejected", "redis_down")
    resp.headers["Retry-After"] = RETRY_AFTER_UNAVAILABLE
    return resp, status


def _enqueue(parsed: Parsed, source: str) -> tuple[Response, int]:
    ext = current_app.extensions["tagsync"]
    if not parsed.events:
        with contextlib.suppress(RedisError):  # only the "last webhook seen" stamp is lost
            ext.events.push([], source=source)
        Metrics(ext.redis).webhook(source, "ignored", "not_a_tag_event")
        return jsonify({"status": "ignored", "reason": "not a tag event"}), 200
    try:
        ext.events.push(parsed.events, source=source)
    except RedisError as exc:
        return _unavailable(source, exc)
    return _queued(source, len(parsed.events), parsed.ignored)


def _queued(source: str, count: int, ignored: int = 0) -> tuple[Response, int]:
    # Durable now; a redelivery is recognised by the pump (counted in /metrics as duplicate).
    body: dict[str, Any] = {"status": "queued", "events": count}
    if ignored:
        body["ignored"] = ignored
    log.debug(  # per request: the counts are in /metrics; INFO would cost the hot path
        "%s webhook: %d queued, %d ignored", source, count, ignored
    )
    return jsonify(body), 202


def _enqueue_raw(body: bytes, count: int) -> tuple[Response, int]:
    ext = current_app.extensions["tagsync"]
    try:
        ext.events.push_raw(body, count, received_at=time.time())
    except RedisError as exc:
        return _unavailable("klcode", exc)
    return _queued("klcode", count)


@bp.post("/webhooks/klcode")
def klcode_webhook() -> tuple[Response, int]:
    """Receive KlCode tag events (signed JSON, one event or a batch)."""
    body = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 before we read it
    secret = current_app.config["KLCODE_WEBHOOK_SECRET"]
    if not secret:
        log.error("KLCODE_WEBHOOK_SECRET is not set: refusing KlCode webhooks")
        return _error(503, "not_configured", "klcode", detail="KLCODE_WEBHOOK_SECRET is not set")
    try:
        signatures.verify(request.headers.get(signatures.HEADER), body, secret)
    except signatures.SignatureError as exc:
        return _error(401, exc.reason, "klcode", detail=str(exc))
    if request.mimetype != "application/json":
        return _error(415, "unsupported_media_type", "klcode", detail="send application/json")
    count = klcode_tag_events(body)
    if count is not None:  # plainly valid: stored as it came, the pump makes the events
        return _enqueue_raw(body, count)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return _error(
            400, "invalid_payload", "klcode", fields={"_schema": ["body is not valid JSON"]}
        )
    try:
        parsed = parse_klcode(payload, received_at=time.time())
    except ValidationError as exc:
        return _error(400, "invalid_payload", "klcode", fields=exc.messages)
    return _enqueue(parsed, "klcode")


@bp.post("/webhooks/activecampaign/<token>")
def ac_webhook(token: str) -> tuple[Response, int]:
    """Receive AC contact_tag_added / contact_tag_removed webhooks (form-encoded)."""
    expected = current_app.config["AC_WEBHOOK_TOKEN"]
    if not expected:
        log.error("AC_WEBHOOK_TOKEN is not set: refusing AC webhooks")
        return _error(503, "not_configured", "ac", detail="AC_WEBHOOK_TOKEN is not set")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return _error(401, "invalid_token", "ac", detail="unknown webhook token")
    if request.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return _error(
            415, "unsupported_media_type", "ac", detail="send application/x-www-form-urlencoded"
        )
    form = request.form.to_dict(flat=True)
    try:
        parsed = parse_ac(form, received_at=time.time(), tz_name=current_app.config["AC_TIMEZONE"])
    except ValidationError as exc:
        return _error(400, "invalid_payload", "ac", fields=exc.messages)
    return _enqueue(parsed, "ac")


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: Redis and the store both answer."""
    ext = current_app.extensions["tagsync"]
    checks: dict[str, str] = {}
    try:
        ext.redis.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        ext.store.ping()
        checks["store"] = "ok"
    except Exception as exc:  # any driver error means "not ready", never a 500
        checks["store"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ok" if ok else "unavailable", **checks}), 200 if ok else 503
