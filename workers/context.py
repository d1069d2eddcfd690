"""Per-process wiring: one Redis client, one store, one client per system, built once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from redis import Redis

from mapping_store import Store

from .acindex import ACContactIndex
from .activecampaign import ActiveCampaignClient
from .coalesce import Coalescer
from .config import Settings
from .embedded import discover
from .errors import NotConfigured
from .klcode import KlCodeClient
from .metrics import Metrics
from .queueing import EventQueue
from .ratelimit import RateLimiter
from .reconcile import Reconciler
from .sides import ACSide, KlCodeSide
from .sync import SyncEngine

log = logging.getLogger(__name__)

REDIS_SOCKET_TIMEOUT = 5.0  # seconds; a Redis that does not answer is treated as down
AC_RATE_KEY = "tagsync:ratelimit:ac"


def resolve_redis_url(settings: Settings) -> str:
    url = settings.redis_url or discover(settings.data_dir)
    if not url:
        raise NotConfigured(
            "REDIS_URL is not set and no embedded Redis is running for "
            f"{settings.data_dir} (start everything with `tagsync run`, or set REDIS_URL)"
        )
    return url


def connect_redis(url: str, *, timeout: float = REDIS_SOCKET_TIMEOUT) -> Redis:
    return Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
    )


@dataclass
class Context:
    settings: Settings
    redis: Redis
    store: Store
    events: EventQueue
    limiter: RateLimiter
    ac: ActiveCampaignClient
    klcode: KlCodeClient
    engine: SyncEngine
    # The same, at background priority on the shared AC limit: for reconciliations.
    ac_background: ActiveCampaignClient
    background_engine: SyncEngine
    metrics: Metrics

    @classmethod
    def build(
        cls, settings: Settings, *, redis: Redis | None = None, store: Store | None = None
    ) -> Context:
        if not settings.ac_api_url or not settings.klcode_api_url:
            raise NotConfigured(
                "AC_API_URL and KLCODE_API_URL must be set (or use `tagsync run` for the sandbox)"
            )
        redis = redis or connect_redis(resolve_redis_url(settings))
        store = store or Store(settings.effective_database_url)
        metrics = Metrics(redis)
        rate = settings.ac_rate_limit
        limiter = RateLimiter(redis, key=AC_RATE_KEY, rate=rate, on_wait=metrics.rate_wait)
        background = RateLimiter(
            redis, key=AC_RATE_KEY, rate=rate, priority="low", on_wait=metrics.rate_wait
        )
        ac = ac_client(settings, limiter, metrics)
        ac_background = ac_client(settings, background, metrics)
        klcode = klcode_client(settings, metrics)
        coalescer = Coalescer(redis, ACContactIndex(redis, ac), settings.queue_name)
        return cls(
            settings,
            redis,
            store,
            EventQueue(redis, settings.queue_name, retry_intervals=settings.retry_intervals),
            limiter,
            ac,
            klcode,
            make_engine(redis, store, ac, klcode, defer=coalescer),
            ac_background,
            make_engine(redis, store, ac_background, klcode),
            metrics,
        )

    def reconciler(self, progress: Callable[[dict[str, Any]], None] | None = None) -> Reconciler:
        return Reconciler(
            redis=self.redis,
            store=self.store,
            ac=self.ac_background,
            klcode=self.klcode,
            engine=self.background_engine,
            progress=progress,
        )


def _counted(system: str, metrics: Metrics | None) -> Callable[[str, int | str], None] | None:
    """The clients' per-request hook: counts requests by method and status in /metrics."""
    if metrics is None:
        return None
    return lambda method, status: metrics.request(system, method, status)


def ac_client(
    settings: Settings, limiter: RateLimiter | None, metrics: Metrics | None = None
) -> ActiveCampaignClient:
    return ActiveCampaignClient(
        session=requests.Session(),
        base_url=settings.ac_api_url,
        api_token=settings.ac_api_token,
        timeout=settings.http_timeout,
        limiter=limiter,
        on_request=_counted("ac", metrics),
    )


def klcode_client(settings: Settings, metrics: Metrics | None = None) -> KlCodeClient:
    return KlCodeClient(
        session=requests.Session(),
        base_url=settings.klcode_api_url,
        api_key=settings.klcode_api_key,
        timeout=settings.http_timeout,
        on_request=_counted("klcode", metrics),
    )


def make_engine(
    redis: Redis,
    store: Store,
    ac: ActiveCampaignClient,
    klcode: KlCodeClient,
    defer: Callable[[Any, Any], bool] | None = None,
) -> SyncEngine:
    def resolve_ac_tag(name: str) -> int | None:
        tag = ac.find_tag(name)
        return tag.id if tag else None

    return SyncEngine(
        redis=redis,
        store=store,
        sides={"ac": ACSide(ac, redis), "klcode": KlCodeSide(klcode, redis)},
        resolve_ac_tag=resolve_ac_tag,
        defer=defer,
    )


_context: Context | None = None


def get_context() -> Context:
    """The process's context, built from the environment on first use (in RQ workers)."""
    global _context
    if _context is None:
        _context = Context.build(Settings.from_env())
    return _context


def set_context(ctx: Context | None) -> None:
    """Install a prepared context (the worker command and tests do this)."""
    global _context
    _context = ctx
