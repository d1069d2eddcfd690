"""The `tagsync` command. Errors print one clear line and exit non-zero."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from mapping_store import (
    DIRECTIONS,
    SCHEDULES,
    DuplicateMapping,
    InvalidMapping,
    MappingNotFound,
    Store,
    StoreError,
)
from workers.activecampaign import ActiveCampaignClient
from workers.config import Settings
from workers.context import (
    AC_RATE_KEY,
    Context,
    ac_client,
    connect_redis,
    resolve_redis_url,
    set_context,
)
from workers.errors import NotConfigured, SyncError
from workers.logs import setup_logging
from workers.mappings import ACUnavailable, UnknownACTag, create_mapping, update_mapping

log = logging.getLogger("tagsync")

AC_WEBHOOK_EVENTS = ["contact_tag_added", "contact_tag_removed"]
AC_WEBHOOK_SOURCES = ["public", "admin", "api", "system"]
DEFAULT_WORKERS = 2
SANDBOX_MAPPINGS = [
    ("VIP Customer", "bidirectional"),
    ("Cancelled - Last 30 Days", "klcode_to_ac"),
    ("Reactivated", "klcode_to_ac"),
    ("Webinar Attendee - March 2026", "ac_to_klcode"),
]


class Fail(click.ClickException):
    """One line on stderr, exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"tagsync: error: {self.message}", err=True)


@contextmanager
def friendly_errors() -> Iterator[None]:
    try:
        yield
    except (NotConfigured, ACUnavailable, UnknownACTag, DuplicateMapping, MappingNotFound) as exc:
        raise Fail(str(exc)) from exc
    except InvalidMapping as exc:
        raise Fail(f"invalid {exc.field}: {exc.message}") from exc
    except (StoreError, SyncError) as exc:
        raise Fail(str(exc)) from exc
    except ValueError as exc:
        raise Fail(str(exc)) from exc


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise Fail(str(exc)) from exc


def _store(settings: Settings) -> Store:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.effective_database_url)
    store.init_schema()
    return store


def _ac(settings: Settings) -> ActiveCampaignClient | None:
    """An AC client for the CLI, on the deployment's shared rate limit when Redis is reachable."""
    if not settings.ac_api_url:
        return None
    from workers.embedded import discover  # noqa: PLC0415
    from workers.ratelimit import RateLimiter  # noqa: PLC0415

    url = settings.redis_url or discover(settings.data_dir)
    limiter = (
        RateLimiter(connect_redis(url), key=AC_RATE_KEY, rate=settings.ac_rate_limit)
        if url
        else None
    )
    return ac_client(settings, limiter)


@click.group()
def main() -> None:
    """tagsync: real-time tag sync between KlCode and ActiveCampaign."""


# -- processes ----------------------------------------------------------------------------


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, default=None, help="default: $PORT or 8000")
@click.option(
    "--workers", "web_workers", type=int, default=None, help="default: $WEB_CONCURRENCY or 2"
)
def web(host: str, port: int | None, web_workers: int | None) -> None:
    """Run the receiver, API and health endpoints under gunicorn."""
    settings = _settings()
    argv = _gunicorn_argv(host, port or settings.port, web_workers)
    os.execvp(argv[0], argv)


GUNICORN_SETTINGS = Path(__file__).with_name("gunicorn_settings.py")


def _gunicorn_argv(host: str, port: int, web_workers: int | None) -> list[str]:
    workers = ["--workers", str(web_workers)] if web_workers else []  # else the settings file's
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(GUNICORN_SETTINGS),
        "--bind",
        f"{host}:{port}",
        *workers,
        "webhooks:create_app()",
    ]


@main.command()
@click.option("--burst", is_flag=True, help="exit when the queue is empty")
@click.option("--log-level", default="INFO", show_default=True)
def worker(burst: bool, log_level: str) -> None:
    """Run one RQ worker (with RQ's scheduler, for delayed retries) and an inbox pump."""
    from workers.pump import Pump  # noqa: PLC0415
    from workers.worker import make_worker  # noqa: PLC0415

    setup_logging(log_level)
    settings = _settings()
    with friendly_errors():
        ctx = Context.build(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        ctx.store.init_schema()
    set_context(ctx)
    if burst:  # what was received before now becomes jobs first, so this run sees them
        ctx.events.drain_all()
    pump = Pump(ctx.events).start()
    try:
        # Jobs run in this process (see workers/worker.py for why, and how a dead one is noticed).
        make_worker(ctx.redis, settings.queue_name).work(
            burst=burst, with_scheduler=True, logging_level=log_level
        )
    finally:
        pump.stop()


@main.command()
@click.option("--workers", "n_workers", type=int, default=DEFAULT_WORKERS, show_default=True)
@click.option("--port", type=int, default=None, help="web port (default $PORT or 8000)")
def run(n_workers: int, port: int | None) -> None:
    """Run everything on this machine: Redis, web, workers (and the sandbox if unconfigured)."""
    from .runner import Runner  # noqa: PLC0415

    setup_logging("WARNING")
    settings = _settings()
    Runner(settings, n_workers=n_workers, port=port or settings.port).run()


@main.command()
@click.option("--ac-port", type=int, default=8101, show_default=True)
@click.option("--klcode-port", type=int, default=8102, show_default=True)
@click.option("--klcode-webhook-url", default=None, help="where the KlCode stand-in sends webhooks")
def sandbox(ac_port: int, klcode_port: int, klcode_webhook_url: str | None) -> None:
    """Run only the local AC and KlCode stand-ins (seeded), until Ctrl-C."""
    from sandbox import Sandbox  # noqa: PLC0415

    settings = _settings()
    sb = Sandbox(
        ac_port=ac_port,
        klcode_port=klcode_port,
        klcode_secret=settings.klcode_webhook_secret or "sandbox-klcode-secret",
    ).start()
    if klcode_webhook_url:
        sb.point_klcode_webhooks(klcode_webhook_url)
    click.echo(f"SANDBOX ActiveCampaign stand-in: {sb.ac_url}  (Api-Token: {sb.ac.api_token})")
    click.echo(f"SANDBOX KlCode stand-in:         {sb.klcode_url}  (API key: {sb.klcode.api_key})")
    click.echo("Ctrl-C stops them.")
    _wait_for_signal()
    sb.stop()


@main.command()
@click.option("--log-level", default="INFO", show_default=True)
def scheduler(log_level: str) -> None:
    """Queue scheduled (hourly/daily) reconciliations and refresh customer counts."""
    from workers.schedule import run_forever  # noqa: PLC0415

    setup_logging(log_level)
    with friendly_errors():
        ctx = Context.build(_settings())
        ctx.store.init_schema()
    run_forever(ctx)


@main.command("sync-now")
@click.argument("mapping_id", type=int, required=False)
@click.option("--all", "sync_all", is_flag=True, help="every active mapping")
@click.option("--dry-run", is_flag=True, help="compute and show the plan; change nothing")
@click.option("--background", is_flag=True, help="queue it for the workers instead of running here")
@click.option("--json", "as_json", is_flag=True)
def sync_now(
    mapping_id: int | None, sync_all: bool, dry_run: bool, background: bool, as_json: bool
) -> None:
    """Reconcile one mapping (or all): compare both sides and fix the difference."""
    from workers.queueing import enqueue_reconcile  # noqa: PLC0415
    from workers.reconcile import AlreadyRunning  # noqa: PLC0415

    if (mapping_id is None) == (not sync_all):
        raise Fail("give a MAPPING_ID or --all")
    settings = _settings()
    with friendly_errors():
        ctx = Context.build(settings)
        ctx.store.init_schema()
        ids = (
            [mapping_id]
            if mapping_id is not None
            else [m.id for m in ctx.store.list_mappings() if m.active]
        )
        for mid in ids:
            ctx.store.get_mapping(mid)  # a clear error for an unknown id
    if background:
        for mid in ids:
            job = enqueue_reconcile(ctx.redis, mid, dry_run=dry_run)
            click.echo(f"mapping {mid}: queued as job {job.id if job else '?'}")
        return
    reports = []
    for mid in ids:
        bar = click.progressbar(length=1, label=f"mapping {mid}", file=sys.stderr, show_pos=True)

        def progress(p: dict[str, Any], bar: Any = bar, mid: int = mid) -> None:
            if not sys.stderr.isatty():
                return  # a progress bar is for people; logs and pipes get the report
            if p.get("planned"):
                bar.length = max(1, int(p["planned"]))
                bar.pos = min(bar.length, int(p.get("applied", 0)))
            bar.label = f"mapping {mid} {p.get('phase', '')} ({p.get('pages', 0)} pages)"
            bar.render_progress()

        try:
            with friendly_errors():
                report = ctx.reconciler(progress).run(mid, dry_run=dry_run)
        except AlreadyRunning as exc:
            raise Fail(str(exc)) from exc
        finally:
            if sys.stderr.isatty():
                bar.render_finish()
        reports.append(report)
        if not as_json:
            _print_report(report)
    if as_json:
        click.echo(json.dumps({"reports": [r.to_dict() for r in reports]}, indent=2))


def _print_report(r: Any) -> None:
    p = r.plan
    head = "DRY RUN, nothing changed" if r.dry_run else "done"
    click.echo(
        f"mapping {r.mapping_id}: {head} in {r.seconds:.1f} s "
        f"(KlCode holders {r.klcode_holders}, AC holders {r.ac_holders})"
    )
    for name, label in (
        ("add_ac", "add in AC"),
        ("remove_ac", "remove in AC"),
        ("add_klcode", "add in KlCode"),
        ("remove_klcode", "remove in KlCode"),
    ):
        count = p[name]["count"]
        if count:
            sample = ", ".join(p[name]["emails"][:5]) + (" ..." if count > 5 else "")
            click.echo(f"  {label:<17} {count:>6}  {sample}")
    if not r.dry_run:
        click.echo(
            f"  applied: +{r.added_ac}/-{r.removed_ac} AC, "
            f"+{r.added_klcode}/-{r.removed_klcode} KlCode; "
            f"{r.not_found} not found, {r.stale} superseded, {r.failed} failed; "
            f"{r.bulk_batches} bulk imports, {r.ac_requests} AC requests"
        )
    for note in r.notes:
        click.echo(f"  note: {note}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Health, as on the admin page: queues, failed jobs, AC rate, last webhook per system."""
    from workers.metrics import Metrics  # noqa: PLC0415
    from workers.queueing import RECONCILE_QUEUE, queue_depths  # noqa: PLC0415

    settings = _settings()
    with friendly_errors():
        redis = connect_redis(resolve_redis_url(settings))
        depths = queue_depths(redis, [settings.queue_name, RECONCILE_QUEUE])
        snap = Metrics(redis).snapshot(queues=depths)
    if as_json:
        click.echo(json.dumps(snap, indent=2))
        return
    now = time.time()
    for source, at in snap["last_webhook_at"].items():
        when = "never" if not at else f"{now - at:.0f} s ago"
        click.echo(f"last {source} webhook: {when}")
    rate = snap["ac_requests_last_second"]
    click.echo(f"AC requests in the last second: {rate} (limit {settings.ac_rate_limit}/s)")
    for key, n in depths.items():
        click.echo(f"{key.replace('|', ' '):<30} {n:>8}")
    for key, n in sorted(snap["outcomes"].items()):
        click.echo(f"events {key.replace('|', ' '):<23} {n:>8}")


@main.command()
def demo() -> None:
    """Drive the running sandbox through the seed's use cases and print the timings."""
    from .demo import Demo, load_sandbox_info  # noqa: PLC0415

    Demo(load_sandbox_info(_settings().data_dir)).run()


def _wait_for_signal() -> None:
    stop = {"now": False}

    def handler(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop["now"]:
        time.sleep(0.2)


# -- mappings -----------------------------------------------------------------------------


ROW = "{:>4}  {:<32} {:>6}  {:<32} {:<14} {:<8} {:<6} {:>6}"


def _mapping_line(m: Any) -> str:
    count = "-" if m.customer_count is None else str(m.customer_count)
    state = "active" if m.active else "inactive"
    return ROW.format(
        m.id, m.klcode_tag, m.ac_tag_id, m.ac_tag_name, m.direction, state, m.schedule, count
    )


@main.group()
def mappings() -> None:
    """List, add, edit and delete tag mappings."""


@mappings.command("list")
@click.option("--json", "as_json", is_flag=True)
def mappings_list(as_json: bool) -> None:
    """Show every mapping."""
    with friendly_errors():
        rows = _store(_settings()).list_mappings()
    if as_json:
        click.echo(json.dumps({"mappings": [m.to_dict() for m in rows]}, indent=2))
        return
    click.echo(
        ROW.format("ID", "KLCODE TAG", "AC ID", "AC TAG", "DIRECTION", "STATUS", "SCHED", "COUNT")
    )
    for m in rows:
        click.echo(_mapping_line(m))


direction_opt = click.option("--direction", type=click.Choice(DIRECTIONS), default=None)
schedule_opt = click.option("--schedule", type=click.Choice(SCHEDULES), default=None)


@mappings.command("add")
@click.option("--klcode-tag", required=True)
@click.option("--ac-tag-id", type=click.IntRange(min=1), required=True)
@direction_opt
@click.option("--inactive", is_flag=True)
@schedule_opt
@click.option("--json", "as_json", is_flag=True)
def mappings_add(
    klcode_tag: str,
    ac_tag_id: int,
    direction: str | None,
    inactive: bool,
    schedule: str | None,
    as_json: bool,
) -> None:
    """Map a KlCode tag to an AC tag id (checked against AC)."""
    settings = _settings()
    with friendly_errors():
        m = create_mapping(
            _store(settings),
            _ac(settings),
            klcode_tag=klcode_tag,
            ac_tag_id=ac_tag_id,
            direction=direction or "bidirectional",
            active=not inactive,
            schedule=schedule or "off",
        )
    click.echo(
        json.dumps(m.to_dict(), indent=2)
        if as_json
        else f"added mapping {m.id}: {m.klcode_tag!r} <-> AC tag {m.ac_tag_id} "
        f"{m.ac_tag_name!r} ({m.direction})"
    )


@mappings.command("edit")
@click.argument("mapping_id", type=int)
@click.option("--klcode-tag", default=None)
@click.option("--ac-tag-id", type=click.IntRange(min=1), default=None)
@direction_opt
@click.option("--active/--inactive", default=None)
@schedule_opt
@click.option("--json", "as_json", is_flag=True)
def mappings_edit(
    mapping_id: int,
    klcode_tag: str | None,
    ac_tag_id: int | None,
    direction: str | None,
    active: bool | None,
    schedule: str | None,
    as_json: bool,
) -> None:
    """Change a mapping's fields."""
    fields = {
        k: v
        for k, v in {
            "klcode_tag": klcode_tag,
            "ac_tag_id": ac_tag_id,
            "direction": direction,
            "active": active,
            "schedule": schedule,
        }.items()
        if v is not None
    }
    if not fields:
        raise Fail("nothing to change: give at least one option (see --help)")
    settings = _settings()
    with friendly_errors():
        m = update_mapping(_store(settings), _ac(settings), mapping_id, **fields)
    click.echo(
        json.dumps(m.to_dict(), indent=2)
        if as_json
        else f"updated mapping {m.id}: {_mapping_line(m).strip()}"
    )


@mappings.command("delete")
@click.argument("mapping_id", type=int)
def mappings_delete(mapping_id: int) -> None:
    """Delete a mapping. Tags already applied stay in both systems."""
    with friendly_errors():
        _store(_settings()).delete_mapping(mapping_id)
    click.echo(f"deleted mapping {mapping_id} (tags already applied stay in both systems)")


# -- sync log and failed jobs -------------------------------------------------------------


@main.command("log")
@click.option("--email", default=None)
@click.option("--mapping", "mapping_id", type=int, default=None)
@click.option("--outcome", default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def log_cmd(
    email: str | None, mapping_id: int | None, outcome: str | None, limit: int, as_json: bool
) -> None:
    """Show the sync log, newest first."""
    with friendly_errors():
        entries = _store(_settings()).sync_log(
            email=email, mapping_id=mapping_id, outcome=outcome, limit=limit
        )
    if as_json:
        click.echo(json.dumps({"entries": [e.to_dict() for e in entries]}, indent=2))
        return
    for e in entries:
        when = e.at.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{when}  {e.source:<7} {e.op or '-':<6} {e.outcome:<17} m={e.mapping_id or '-'} "
            f"{e.email or '-'}  {e.tag or ''}  {e.detail}"
        )


@main.group()
def failed() -> None:
    """Inspect and replay events whose jobs failed."""


def _failed_registry() -> tuple[Any, Any]:
    from rq import Queue  # noqa: PLC0415
    from rq.serializers import JSONSerializer  # noqa: PLC0415

    settings = _settings()
    with friendly_errors():
        redis = connect_redis(resolve_redis_url(settings))
    queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)
    return queue, queue.failed_job_registry


@failed.command("list")
def failed_list() -> None:
    """Failed jobs with the reason each failed."""
    queue, registry = _failed_registry()
    ids = registry.get_job_ids()
    if not ids:
        click.echo("no failed jobs")
        return
    for job in queue.job_class.fetch_many(
        ids, connection=queue.connection, serializer=queue.serializer
    ):
        if job is None:
            continue
        reason = (job.latest_result().exc_string if job.latest_result() else "") or ""
        last = reason.strip().splitlines()[-1] if reason.strip() else "unknown"
        click.echo(f"{job.id}  {job.description}  {last}")


def _parse_since(value: str) -> datetime:
    """An ISO time (`2026-12-04T10:00`, UTC if no zone) or an age (`30m`, `2h`, `1d`)."""
    m = re.fullmatch(r"(\d+)([smhd])", value.strip())
    if m:
        seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return datetime.now(timezone.utc) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise Fail(f"--since takes an ISO time or an age like 30m, 2h, 1d; got {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@failed.command("replay")
@click.argument("job_id", required=False)
@click.option("--all", "replay_all", is_flag=True, help="every failed job")
@click.option(
    "--since", default=None, help="failed jobs that failed after this time or age (30m, 2h)"
)
def failed_replay(job_id: str | None, replay_all: bool, since: str | None) -> None:
    """Re-run failed events through the same sync path (the ordering guard still applies)."""
    if sum(bool(x) for x in (job_id, replay_all, since)) != 1:
        raise Fail("give one of JOB_ID, --all or --since")
    cutoff = _parse_since(since) if since else None
    queue, registry = _failed_registry()
    ids = [job_id] if job_id else registry.get_job_ids()
    if cutoff is not None:
        jobs = queue.job_class.fetch_many(
            ids, connection=queue.connection, serializer=queue.serializer
        )
        ids = [j.id for j in jobs if j is not None and j.ended_at and _aware(j.ended_at) >= cutoff]
    done = 0
    for jid in ids:
        try:
            registry.requeue(jid)
            done += 1
        except Exception as exc:  # rq raises InvalidJobOperation / NoSuchJobError
            raise Fail(f"cannot replay {jid}: {exc}") from exc
    click.echo(f"requeued {done} job(s)")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# -- AC webhook ---------------------------------------------------------------------------


@main.group("ac-webhook")
def ac_webhook() -> None:
    """Manage the AC webhook that reports tag changes to tagsync."""


def install_ac_webhook(
    ac: ActiveCampaignClient, url: str, echo: Callable[[str], None] = click.echo
) -> bool:
    """Register the webhook unless one for this URL exists; True if created."""
    existing = ac.find_webhooks(url)
    if existing:
        echo(f"AC webhook already installed (id {existing[0].get('id')}) for this URL")
        return False
    hook = ac.create_webhook(
        name="tagsync", url=url, events=AC_WEBHOOK_EVENTS, sources=AC_WEBHOOK_SOURCES
    )
    echo(f"AC webhook installed (id {hook.get('id')}) for contact_tag_added/removed")
    return True


@ac_webhook.command("install")
@click.option(
    "--url", required=True, help="https://host/webhooks/activecampaign/<AC_WEBHOOK_TOKEN>"
)
def ac_webhook_install(url: str) -> None:
    """Register the webhook in AC (idempotent: an existing one for the URL is kept)."""
    settings = _settings()
    ac = _ac(settings)
    if ac is None:
        raise Fail("AC_API_URL is not set")
    if settings.ac_webhook_token and not url.rstrip("/").endswith(settings.ac_webhook_token):
        click.echo(
            "warning: the URL does not end with AC_WEBHOOK_TOKEN; the receiver will answer 401",
            err=True,
        )
    with friendly_errors():
        install_ac_webhook(ac, url)


def random_secret() -> str:
    return secrets.token_urlsafe(24)


if __name__ == "__main__":  # pragma: no cover
    main()
