"""Ops surfaces: Prometheus metrics (public, like health) and the RQ dashboard (admin only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from workers.metrics import Metrics, RedisCollector
from workers.queueing import RECONCILE_QUEUE, queue_depths

bp = Blueprint("ops", __name__)


def depths() -> dict[str, int]:
    ext = current_app.extensions["tagsync"]
    return queue_depths(ext.redis, [ext.settings.queue_name, RECONCILE_QUEUE])


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format, deployment-wide (the counters live in Redis)."""
    ext = current_app.extensions["tagsync"]
    registry = CollectorRegistry()
    registry.register(RedisCollector(Metrics(ext.redis), depths, ext.settings.ac_rate_limit))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def mount_rq_dashboard(app: Flask, redis_url: str, guard: Any) -> None:
    """rq-dashboard at /rq, behind the admin guard (it can delete and requeue jobs)."""
    import rq_dashboard  # noqa: PLC0415 - optional at import time for the receiver's hot path
    from rq.serializers import JSONSerializer  # noqa: PLC0415

    app.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    rq_dashboard.web.setup_rq_connection(app)
    rq_dashboard.web.config.serializer = JSONSerializer  # our jobs are JSON, not pickles
    funcs = rq_dashboard.blueprint.before_request_funcs.setdefault(None, [])
    if guard not in funcs:
        funcs.insert(0, guard)  # before rq-dashboard's own hooks: nothing runs unauthenticated
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
