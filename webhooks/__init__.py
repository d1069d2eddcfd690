"""The web process: webhook receiver, health, (admin API and pages in later modules).

Start it with `gunicorn 'webhooks:create_app()'` or `tagsync web`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from redis import Redis
from werkzeug.exceptions import HTTPException

from mapping_store import Store
from workers.activecampaign import ActiveCampaignClient
from workers.config import Settings
from workers.context import (
    AC_RATE_KEY,
    ac_client,
    connect_redis,
    klcode_client,
    resolve_redis_url,
)
from workers.embedded import discover
from workers.klcode import KlCodeClient
from workers.logs import setup_logging
from workers.metrics import Metrics
from workers.queueing import EventQueue
from workers.ratelimit import RateLimiter

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # bytes; larger webhook bodies get 413
WEB_REDIS_TIMEOUT = 2.0  # seconds: a stuck Redis turns into a quick 503, not a hung sender


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's, with the signing serializer built once per key instead of on every request
    (for a webhook that set-up cost a tenth of the request; only the admin page uses sessions)."""

    _cached: tuple[tuple[Any, ...], Any] | None = None

    def get_signing_serializer(self, app: Flask) -> Any:
        key = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, super().get_signing_serializer(app))
        return self._cached[1]

    def open_session(self, app: Flask, request: Any) -> Any:
        if "HTTP_COOKIE" not in request.environ:  # webhooks: nothing to parse the headers for
            return self.session_class()
        return super().open_session(app, request)


@dataclass
class WebContext:
    settings: Settings
    redis: Redis
    store: Store
    events: EventQueue
    ac: ActiveCampaignClient | None  # to check AC tag ids when mappings change
    klcode: KlCodeClient | None  # the tag catalogue for the Add New Mapping dropdown
    redis_url: str


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app from the environment; `test_config` overrides any key."""
    app = Flask(__name__)
    if not logging.getLogger().handlers:  # under gunicorn: our decision lines to its stderr too
        setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    settings = Settings.from_env()
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=MAX_BODY,
        KLCODE_WEBHOOK_SECRET=settings.klcode_webhook_secret,
        AC_WEBHOOK_TOKEN=settings.ac_webhook_token,
        AC_TIMEZONE=settings.ac_timezone,
        ADMIN_TOKEN=settings.admin_token,
        TAGSYNC_REDIS=None,  # a ready Redis client (tests); else built from REDIS_URL
        TAGSYNC_STORE=None,  # a ready Store (tests); else built from DATABASE_URL
        TAGSYNC_AC=None,  # a ready ActiveCampaignClient (tests); else built from AC_API_URL
        TAGSYNC_KLCODE=None,  # a ready KlCodeClient (tests); else built from KLCODE_API_URL
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    # Sessions only carry flash messages; the key is derived from ADMIN_TOKEN so every web
    # process and host agrees on it without another secret to configure.
    token = app.config["ADMIN_TOKEN"] or secrets.token_hex(16)
    app.secret_key = hmac.new(token.encode(), b"tagsync-session", hashlib.sha256).hexdigest()
    app.session_interface = _SessionInterface()
    init_app(app, settings)
    from .admin import bp as admin_bp  # noqa: PLC0415 - views need the app's extensions in place
    from .api import bp as api_bp  # noqa: PLC0415
    from .api import require_admin  # noqa: PLC0415
    from .ops import bp as ops_bp  # noqa: PLC0415
    from .ops import mount_rq_dashboard  # noqa: PLC0415
    from .views import bp  # noqa: PLC0415

    app.register_blueprint(bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(admin_bp)
    mount_rq_dashboard(app, app.extensions["tagsync"].redis_url, require_admin)
    _register_errors(app)
    return app


def init_app(app: Flask, settings: Settings) -> None:
    redis = app.config["TAGSYNC_REDIS"] or connect_redis(
        resolve_redis_url(settings), timeout=WEB_REDIS_TIMEOUT
    )
    store = app.config["TAGSYNC_STORE"] or Store(settings.effective_database_url)
    if app.config["TAGSYNC_STORE"] is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            store.init_schema()
        except Exception:  # the receiver works without the store; /readyz reports it
            log.exception("mapping store not reachable at start-up")
    metrics = Metrics(redis)
    ac = app.config["TAGSYNC_AC"]
    if ac is None and settings.ac_api_url:
        limiter = RateLimiter(
            redis, key=AC_RATE_KEY, rate=settings.ac_rate_limit, on_wait=metrics.rate_wait
        )
        ac = ac_client(settings, limiter, metrics)
    klcode = app.config["TAGSYNC_KLCODE"]
    if klcode is None and settings.klcode_api_url:
        klcode = klcode_client(settings, metrics)
    events = EventQueue(redis, settings.queue_name, retry_intervals=settings.retry_intervals)
    # rq-dashboard opens its own connections from a URL; tests pass a client and get a stand-in URL.
    redis_url = settings.redis_url or (
        discover(settings.data_dir) if app.config["TAGSYNC_REDIS"] is None else None
    )
    app.extensions["tagsync"] = WebContext(
        settings, redis, store, events, ac, klcode, redis_url or "redis://127.0.0.1:6379/0"
    )


def _register_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        names = {
            413: "payload_too_large",
            404: "not_found",
            405: "method_not_allowed",
            415: "unsupported_media_type",
        }
        body = {
            "error": names.get(code, (exc.name or "error").lower().replace(" ", "_")),
            "detail": exc.description,
        }
        if code == 413:
            body["detail"] = f"body larger than {MAX_BODY} bytes"
        return jsonify(body), code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        # Never a bare 500 page; and never a 410, which would make AC disable the webhook.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify({"error": "internal_error", "detail": "unexpected error; logged"}), 500
