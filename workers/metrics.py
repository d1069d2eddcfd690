"""Deployment-wide counters, kept in Redis so every web and worker process on every host adds to
the same numbers; `/metrics` renders them in Prometheus's text format (prometheus-client), and
the health page and `tagsync status` read the same snapshot.

Recording never fails the caller: a metric lost to a Redis blip is better than a lost event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from .queueing import LAST_WEBHOOK_KEY, WEBHOOK_METRICS

log = logging.getLogger(__name__)

PREFIX = "tagsync:m:"
WEBHOOKS = WEBHOOK_METRICS  # "<source>|<result>|<reason>" -> count (ingest counts accepted ones)
OUTCOMES = PREFIX + "outcomes"  # "<source>|<outcome>" -> count
REQUESTS = PREFIX + "requests"  # "<system>|<method>|<status>" -> count
RATE_WAITS = PREFIX + "ratelimit"  # "waits", "waited_ms"
LATENCY = PREFIX + "latency"  # "le_<bound>", "sum_ms", "count"
LATENCY_BOUNDS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)  # seconds, received -> applied


def _quiet(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RedisError:
            log.debug("metric not recorded", exc_info=True)
            return None

    return wrapper


class Metrics:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @_quiet
    def webhook(self, source: str, result: str, reason: str = "", n: int = 1) -> None:
        self.redis.hincrby(WEBHOOKS, f"{source}|{result}|{reason}", n)

    @_quiet
    def outcome(self, source: str, outcome: str, latency: float | None = None) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(OUTCOMES, f"{source}|{outcome}", 1)
        if latency is not None and latency >= 0:
            for bound in LATENCY_BOUNDS:
                if latency <= bound:
                    pipe.hincrby(LATENCY, f"le_{bound}", 1)
            pipe.hincrby(LATENCY, "sum_ms", int(latency * 1000))
            pipe.hincrby(LATENCY, "count", 1)
        pipe.execute()

    @_quiet
    def request(self, system: str, method: str, status: int | str) -> None:
        self.redis.hincrby(REQUESTS, f"{system}|{method}|{status}", 1)

    @_quiet
    def rate_wait(self, seconds: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(RATE_WAITS, "waits", 1)
        pipe.hincrby(RATE_WAITS, "waited_ms", int(seconds * 1000))
        pipe.execute()

    def _hash(self, key: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(key).items()}

    def snapshot(self, *, queues: dict[str, int] | None = None) -> dict[str, Any]:
        """Everything at once, for the health page, `tagsync status` and /metrics."""
        now = time.time()
        window = self.redis.zcount("tagsync:ratelimit:ac", (now - 1) * 1000, "+inf")
        last = {}
        for source in ("klcode", "ac"):
            raw = self.redis.get(LAST_WEBHOOK_KEY.format(source=source))
            last[source] = float(raw) if raw else None
        return {
            "webhooks": self._hash(WEBHOOKS),
            "outcomes": self._hash(OUTCOMES),
            "requests": self._hash(REQUESTS),
            "rate_waits": self._hash(RATE_WAITS),
            "latency": self._hash(LATENCY),
            "ac_requests_last_second": int(window),
            "last_webhook_at": last,
            "queues": queues or {},
        }


# (metric, help, labels, snapshot section whose keys hold the label values)
LABELLED_COUNTERS = (
    (
        "tagsync_webhooks",
        "Webhook events by source and result",
        ["source", "result", "reason"],
        "webhooks",
    ),
    ("tagsync_events", "Events by final outcome", ["source", "outcome"], "outcomes"),
    (
        "tagsync_api_requests",
        "Outbound API requests by system and status",
        ["system", "method", "status"],
        "requests",
    ),
)


class RedisCollector(Collector):
    """Renders a Metrics snapshot as Prometheus metric families."""

    def __init__(self, metrics: Metrics, queue_depths: Any, ac_rate_limit: float) -> None:
        self.metrics = metrics
        self.queue_depths = queue_depths
        self.ac_rate_limit = ac_rate_limit

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("tagsync_redis_up", "Whether Redis answered the scrape")
        try:
            snap = self.metrics.snapshot(queues=self.queue_depths())
        except RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, doc, labels, section in LABELLED_COUNTERS:
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, n in snap[section].items():  # stored as "label1|label2|..."
                family.add_metric(key.split("|", len(labels) - 1), n)
            yield family
        waits = CounterMetricFamily(
            "tagsync_ratelimit_waits", "Times a caller waited for an AC permit"
        )
        waits.add_metric([], snap["rate_waits"].get("waits", 0))
        yield waits
        waited = CounterMetricFamily(
            "tagsync_ratelimit_waited_seconds", "Seconds spent waiting for AC permits"
        )
        waited.add_metric([], snap["rate_waits"].get("waited_ms", 0) / 1000)
        yield waited
        lat = snap["latency"]
        buckets = [(str(b), lat.get(f"le_{b}", 0)) for b in LATENCY_BOUNDS] + [
            ("+Inf", lat.get("count", 0))
        ]
        hist = HistogramMetricFamily(
            "tagsync_event_latency_seconds", "Webhook received -> change applied"
        )
        hist.add_metric([], buckets, sum_value=lat.get("sum_ms", 0) / 1000)
        yield hist
        depth = GaugeMetricFamily(
            "tagsync_queue_depth",
            "Jobs waiting, by queue and registry (inbox: webhook requests not yet jobs)",
            labels=["queue", "registry"],
        )
        for key, n in snap["queues"].items():
            depth.add_metric(key.split("|", 1), n)
        yield depth
        rps = GaugeMetricFamily(
            "tagsync_ac_requests_last_second", "AC requests granted in the last second"
        )
        rps.add_metric([], snap["ac_requests_last_second"])
        yield rps
        limit = GaugeMetricFamily("tagsync_ac_rate_limit", "Configured AC requests per second")
        limit.add_metric([], self.ac_rate_limit)
        yield limit
        for source, at in snap["last_webhook_at"].items():
            g = GaugeMetricFamily(
                f"tagsync_last_webhook_{source}_timestamp_seconds",
                f"When the last {source} webhook arrived",
            )
            g.add_metric([], at or 0)
            yield g
