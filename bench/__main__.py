"""tagsync benchmarks: `python -m bench [--quick] [--only NAME ...]` (or `bench/run`).

Every figure is measured in one run, side by side with what it is compared to, and printed
with its target; the results go to bench/results/<time>.json. Real parts throughout: a real
redis-server (AOF on, as in production), gunicorn, `tagsync worker` processes, the HTTP
stand-ins of AC and KlCode. The machine is shared and noisy: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from redis import Redis

from bench import loadgen, wrk
from tests.harness import wait_for
from webhooks.cli import GUNICORN_SETTINGS
from webhooks.signatures import sign
from workers.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET, TOKEN = "bench-secret", "bench-token"
GUNICORN = ["--config", str(GUNICORN_SETTINGS)]  # production's, for tagsync and bare alike

Row = tuple[str, str, str, bool | None]  # figure, value, target, met
PACE = 0.15  # seconds between changes when measuring unloaded latency (AC allows 5-20 per second)


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_for(cond, timeout, what, poll=0.005)  # fine-grained: latencies are measured by it


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code < 500
    except requests.RequestException:
        return False


def _gunicorn(app: str, port: int, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *GUNICORN, app],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait(
        lambda: _up(f"http://127.0.0.1:{port}/healthz") or _up(f"http://127.0.0.1:{port}/x"),
        30,
        app,
    )
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


# -- 1. receiver throughput -------------------------------------------------------------------


Request = tuple[str, dict[str, str], bytes]  # path, headers, body


def _kl_event(n: int, i: int = 0) -> dict[str, Any]:
    return {
        "id": f"evt_{n}_{i}_{time.monotonic_ns()}",
        "type": "customer.tag_added",
        "occurred_at": "2026-03-01T12:00:00Z",
        "customer": {"id": n, "email": f"c{n}.{i}@example.com"},
        "tag": {"name": "VIP Customer"},
    }


def _signed(body: bytes) -> Request:
    return (
        "/webhooks/klcode",
        {"Content-Type": "application/json", "X-KlCode-Signature": sign(SECRET, body)},
        body,
    )


def kl_single(count: int) -> list[Request]:
    return [_signed(json.dumps(_kl_event(n)).encode()) for n in range(count)]


def kl_batch(count: int) -> list[Request]:
    return [
        _signed(json.dumps({"events": [_kl_event(n, i) for i in range(100)]}).encode())
        for n in range(count)
    ]


def ac_form(count: int) -> list[Request]:
    out = []
    for n in range(count):
        body = urlencode(
            {
                "type": "contact_tag_added",
                "date_time": "2024-02-28T07:04:13-06:00",
                "initiated_from": "admin",
                "initiated_by": "admin",
                "list": "0",
                "contact[id]": f"{n}{time.monotonic_ns()}",
                "contact[email]": f"c{n}@example.com",
                "contact[first_name]": "J",
                "contact[last_name]": "W",
                "contact[tags]": "tag1, tag2",
                "tag": "tag2",
            }
        ).encode()
        out.append(
            (
                f"/webhooks/activecampaign/{TOKEN}",
                {"Content-Type": "application/x-www-form-urlencoded"},
                body,
            )
        )
    return out


def _load(port: int, reqs: list[Request], seconds: float) -> loadgen.LoadResult:
    if wrk.available():
        return wrk.run(f"http://127.0.0.1:{port}", reqs, seconds=seconds, connections=16)
    raw = [loadgen.post(path, body, headers) for path, headers, body in reqs]
    return loadgen.run("127.0.0.1", port, raw, seconds=seconds, connections=16)


def bench_receiver(tmp: Path, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """Receiver throughput against a bare Flask endpoint on the same gunicorn configuration.

    Three servers run side by side: bare, tagsync without its Redis write ("unqueued": what the
    write alone costs) and tagsync; rounds alternate between them and each figure is the median
    of its rounds, so a burst of noise on the machine hits all three.
    """
    seconds, rounds = (2.0, 2) if quick else (4.0, 3)
    redis = EmbeddedRedis(tmp / "recv-redis", appendonly=True)  # durable, as in production
    redis.start()
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "DATABASE_URL": f"sqlite:///{tmp / 'recv.db'}",
        "KLCODE_WEBHOOK_SECRET": SECRET,
        "AC_WEBHOOK_TOKEN": TOKEN,
        "PYTHONPATH": str(ROOT),
    }
    apps = {
        "bare": "bench.bare_app:create_app()",
        "unqueued": "bench.bare_app:create_unqueued_app()",
        "tagsync": "webhooks:create_app()",
    }
    ports = {label: free_port() for label in apps}
    procs = {label: _gunicorn(app, ports[label], env, tmp) for label, app in apps.items()}
    rows: list[Row] = []
    raw: dict[str, Any] = {
        "load_generator": "wrk" if wrk.available() else "python asyncio (install wrk)"
    }
    try:
        for name, make, per_second, events_per in (
            ("single KlCode event", kl_single, 8000, 1),
            ("KlCode batch of 100", kl_batch, 400, 100),
            ("AC form post", ac_form, 8000, 1),
        ):
            count = int(per_second * seconds * 1.5)  # more than one round can send: no duplicates
            results: dict[str, list[loadgen.LoadResult]] = {label: [] for label in apps}
            for _ in range(rounds):
                for label in apps:
                    reqs = make(count)  # fresh ids and signatures for every round
                    _load(ports[label], reqs[:50], 0.5)  # warm-up
                    res = _load(ports[label], reqs[50:], seconds)
                    if not res.ok:
                        raise RuntimeError(f"{label} {name}: non-2xx answers {res.statuses}")
                    results[label].append(res)
                redis_client = Redis.from_url(redis.url)
                redis_client.flushdb()  # keep memory flat between rounds
            med = {k: sorted(v, key=lambda r: r.rps)[len(v) // 2] for k, v in results.items()}
            bare, ours, unqueued = med["bare"], med["tagsync"], med["unqueued"]
            ratio = ours.rps / bare.rps
            raw[name] = {
                k: [{"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms} for r in v]
                for k, v in results.items()
            }
            rows.append(
                (
                    f"receiver {name}: req/s tagsync vs bare",
                    f"{ours.rps:.0f} vs {bare.rps:.0f} = {ratio:.2f}",
                    ">= 0.6",
                    ratio >= 0.6,
                )
            )
            rows.append(
                (
                    f"receiver {name}: durable ingest alone (vs tagsync without it)",
                    f"{ours.rps:.0f} vs {unqueued.rps:.0f} = {ours.rps / unqueued.rps:.2f}",
                    "-",
                    None,
                )
            )
            rows.append(
                (
                    f"receiver {name}: p50 / p99 latency",
                    f"{ours.p50_ms:.1f} / {ours.p99_ms:.1f} ms "
                    f"(bare {bare.p50_ms:.1f} / {bare.p99_ms:.1f})",
                    "-",
                    None,
                )
            )
            if events_per > 1:
                rows.append(
                    (
                        f"receiver {name}: events/s made durable",
                        f"{ours.rps * events_per:.0f}",
                        "-",
                        None,
                    )
                )
    finally:
        for proc in procs.values():
            _stop(proc)
        redis.stop()
    return rows, raw


def bench_pump(tmp: Path, redis_url: str, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """How fast the pump turns inbox records into RQ jobs (the second ingest step): it must
    outrun the workers, or the inbox, not the queue, is where a burst waits."""
    from workers.events import TagEvent  # noqa: PLC0415
    from workers.queueing import EventQueue  # noqa: PLC0415

    redis = Redis.from_url(redis_url)
    redis.flushdb()
    queue = EventQueue(redis, "tagsync-bench-pump")
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    for label, per_record, records in (("single events", 1, 20_000), ("batches of 100", 100, 200)):
        records = records // 4 if quick else records
        now = time.time()
        for r in range(records):
            events = [
                TagEvent("klcode", f"kl:p{r}.{i}", "add", f"c{r}.{i}@x.com", "VIP", now, now)
                for i in range(per_record)
            ]
            queue.push(events, source="klcode")
        start = time.perf_counter()
        moved = queue.drain_all()
        elapsed = time.perf_counter() - start
        assert moved == records * per_record == redis.llen(queue.queue.key)
        raw[label] = {"events": moved, "seconds": elapsed}
        rows.append(
            (
                f"pump, inbox -> RQ jobs ({label}): events/s",
                f"{moved / elapsed:.0f}",
                "-",
                None,
            )
        )
        redis.flushdb()
    return rows, raw


# -- 2-7: the running system ------------------------------------------------------------------


def _stack(tmp: Path, redis_url: str, name: str, **kwargs: Any) -> Any:
    from tests.harness import Stack  # noqa: PLC0415 - the integration tests' own harness

    path = tmp / name
    path.mkdir()
    return Stack(path, redis_url, **kwargs).start()


def _rss_kb(pid: int) -> int:
    """Peak resident set (VmHWM) of a process and its children, the largest one."""
    best = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            continue
    return best


def bench_steady(tmp: Path, redis_url: str, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """AC requests per synced change (adds, removals) and end-to-end latency, unloaded."""
    n = 30 if quick else 100
    stack = _stack(tmp, redis_url, "steady", ac_rate_limit=20, sandbox_rate_limit=20)
    try:
        tag = "VIP Customer"
        stack.map(tag, direction="klcode_to_ac")
        emails = [stack.customer(f"steady{i}@example.com") for i in range(n)]
        stack.index_ac_contacts()
        stack.settle()
        ac = stack.sandbox.ac
        latencies: list[float] = []
        results: dict[str, float] = {}
        for op in ("add", "remove"):
            before = ac.stats.to_dict()["total_requests"]
            last = 0.0
            for email in emails:
                # Paced well under the AC limit: this is the unloaded latency, not a queue's.
                time.sleep(max(0.0, PACE - (time.monotonic() - last)))
                start = last = time.monotonic()
                stack.klcode_tag(email, tag, op)
                _wait(
                    lambda email=email, op=op: (tag in ac.tags_of(email)) == (op == "add"),
                    10,
                    "the change in AC",
                )
                if op == "add":
                    latencies.append((time.monotonic() - start) * 1000)
            stack.settle()
            results[op] = (ac.stats.to_dict()["total_requests"] - before) / n
        latencies.sort()
        p50, p99 = (
            statistics.median(latencies),
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        )
        rss = {name: _rss_kb(proc.pid) for name, proc in stack.procs}
        worker_rss = max(v for k, v in rss.items() if k.startswith("worker"))
        rows: list[Row] = [
            (
                "AC requests per synced add (steady state)",
                f"{results['add']:.2f}",
                "<= 1.05",
                results["add"] <= 1.05,
            ),
            (
                "AC requests per synced removal (steady state)",
                f"{results['remove']:.2f}",
                "<= 1.1",
                results["remove"] <= 1.1,
            ),
            (
                "end-to-end latency KlCode webhook -> AC updated, unloaded",
                f"p50 {p50:.0f} ms, p99 {p99:.0f} ms",
                "-",
                None,
            ),
            (
                "peak RSS: web (largest gunicorn process), worker",
                f"{rss.get('web', 0) / 1024:.0f} MiB, {worker_rss / 1024:.0f} MiB",
                "-",
                None,
            ),
        ]
        return rows, {
            "requests_per_change": results,
            "latency_ms": {"p50": p50, "p99": p99},
            "rss_kb": rss,
        }
    finally:
        stack.stop()


def bench_burst(tmp: Path, redis_url: str, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """5,000 KlCode adds on 5,000 contacts known to AC, AC at its real 5 requests/s."""
    n = 1000 if quick else 5000
    stack = _stack(tmp, redis_url, "burst", ac_rate_limit=5, sandbox_rate_limit=5)
    try:
        tag = "Beef Lover"
        stack.map(tag, direction="klcode_to_ac")
        emails = [stack.customer(f"burst{i}@example.com") for i in range(n)]
        stack.index_ac_contacts()  # set-up, not the figure
        stack.sandbox.ac.stats.reset()
        now = time.time()
        start = time.monotonic()
        for i in range(0, n, 100):
            chunk = [stack.kl_event(e, tag, "add", now) for e in emails[i : i + 100]]
            if stack.post_klcode({"events": chunk}).status_code != 202:
                raise RuntimeError("burst not accepted")
        ac = stack.sandbox.ac
        tid = ac.tag_by_name(tag)
        _wait(
            lambda: sum(1 for ct in list(ac.contact_tags.values()) if ct["tag"] == tid) >= n,
            900,
            "the burst",
        )
        took = time.monotonic() - start
        stats = ac.stats.to_dict()
        rows: list[Row] = [
            (
                f"burst drain: {n} KlCode adds applied in AC (AC at 5 req/s)",
                f"{took:.1f} s "
                f"({stats['total_requests']} AC requests, one each would take {n / 5:.0f} s)",
                "<= 60 s" if n == 5000 else "<= 60 s at 5,000",
                took <= 60,
            ),
            (
                "burst drain: 429s from AC",
                str(stats["statuses"].get("429", 0)),
                "0",
                stats["statuses"].get("429", 0) == 0,
            ),
        ]
        return rows, {"seconds": took, "ac": stats}
    finally:
        stack.stop()


def bench_removals(tmp: Path, redis_url: str, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """A burst of KlCode removals (bulk import cannot remove): how much of the AC budget is used."""
    n = 200 if quick else 1000  # the burst size
    rate = 20
    stack = _stack(tmp, redis_url, "removals", ac_rate_limit=rate, sandbox_rate_limit=rate)
    try:
        tag = "Seafood Fan"
        stack.map(tag, direction="klcode_to_ac")
        ac = stack.sandbox.ac
        tid = ac.add_tag(tag)
        emails = []
        for i in range(n):
            email = stack.customer(f"rm{i}@example.com")
            ac.tag_contact(ac.contact_by_email(email), tid, source="admin", notify=False)
            emails.append(email)
        ac.stats.reset()
        now = time.time()
        start = time.monotonic()
        for i in range(0, n, 100):
            chunk = [stack.kl_event(e, tag, "remove", now) for e in emails[i : i + 100]]
            stack.post_klcode({"events": chunk})
        _wait(
            lambda: not any(ct["tag"] == tid for ct in list(ac.contact_tags.values())),
            600,
            "all removals",
        )
        took = time.monotonic() - start
        stats = ac.stats.to_dict()
        used = stats["total_requests"] / took / rate
        rows: list[Row] = [
            (
                f"AC budget use: {n} KlCode removals "
                f"({stats['total_requests']} requests in {took:.1f} s)",
                f"{used * 100:.1f} % of AC_RATE_LIMIT={rate}",
                ">= 95 %",
                used >= 0.95,
            ),
            (
                "AC budget use: 429s from AC",
                str(stats["statuses"].get("429", 0)),
                "0",
                stats["statuses"].get("429", 0) == 0,
            ),
        ]
        return rows, {"seconds": took, "share": used, "ac": stats}
    finally:
        stack.stop()


def bench_reconcile(tmp: Path, redis_url: str, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """Sync Now of a drifted 20,000-customer mapping; AC requests against the minimum possible."""
    n, adds, removals = (4000, 600, 50) if quick else (20000, 3000, 200)
    rate = 20
    stack = _stack(tmp, redis_url, "reconcile", ac_rate_limit=rate, sandbox_rate_limit=rate)
    try:
        tag = "Loyal Customer"
        mid = stack.map(tag, direction="klcode_to_ac")
        ac, kl = stack.sandbox.ac, stack.sandbox.klcode
        tid = ac.add_tag(tag)
        both = n - adds - removals  # hold the tag in both systems already
        for i in range(n):
            email = f"rc{i}@example.com"
            cid = kl.add_customer(email)
            contact = ac.add_contact(email)
            if i < both + adds:
                kl.customers[cid]["tags"].add(tag)
            if i < both or i >= both + adds:
                ac.tag_contact(contact, tid, source="admin", notify=False)
        ac.stats.reset()
        start = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "webhooks.cli", "sync-now", str(mid), "--json"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=3600,
            check=True,
        )
        took = time.monotonic() - start
        report = json.loads(out.stdout)["reports"][0]
        holders = both + removals
        minimum = math.ceil(holders / 100) + math.ceil(adds / 250) + removals
        used = ac.stats.to_dict()["total_requests"]
        index_pages = math.ceil(n / 100) + 1
        rows: list[Row] = [
            (
                f"reconcile {n} customers (+{adds}/-{removals} drift), AC at {rate} req/s",
                f"{took:.1f} s, {used} AC requests",
                "-",
                None,
            ),
            (
                "reconcile: AC requests / minimum (pages + bulk batches + removals)",
                f"{used} / {minimum} = {used / minimum:.2f} (of which {index_pages} build the "
                "contact index, kept fresh afterwards by the scheduler)",
                "-",
                None,
            ),
            (
                "reconcile: converged",
                f"+{report['added_ac']}/-{report['removed_ac']}, failed {report['failed']}",
                f"+{adds}/-{removals}",
                (report["added_ac"], report["removed_ac"]) == (adds, removals),
            ),
        ]
        return rows, {"seconds": took, "requests": used, "minimum": minimum, "report": report}
    finally:
        stack.stop()


def bench_page() -> tuple[list[Row], dict[str, Any]]:
    from bench.admin_page import measure  # noqa: PLC0415

    r = measure()
    return [
        (
            "admin page with 200 mappings, server time",
            f"p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms",
            "< 100 ms",
            r["p95_ms"] < 100,
        )
    ], r


BENCHES = ("receiver", "pump", "steady", "burst", "removals", "reconcile", "page")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes and shorter runs (a smoke test)"
    )
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    args = parser.parse_args(argv)
    rows: list[Row] = []
    raw: dict[str, Any] = {
        "started": datetime.now(timezone.utc).isoformat(),
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    with tempfile.TemporaryDirectory(prefix="tagsync-bench-") as d:
        tmp = Path(d)
        if "receiver" in args.only:
            r, raw["receiver"] = bench_receiver(tmp, args.quick)
            rows += r
        if set(args.only) & {"pump", "steady", "burst", "removals", "reconcile"}:
            redis = EmbeddedRedis(tmp / "redis", appendonly=True)
            redis.start()
            try:
                for name, fn in (
                    ("pump", bench_pump),
                    ("steady", bench_steady),
                    ("burst", bench_burst),
                    ("removals", bench_removals),
                    ("reconcile", bench_reconcile),
                ):
                    if name in args.only:
                        print(f"... {name}", file=sys.stderr, flush=True)
                        r, raw[name] = fn(tmp, redis.url, args.quick)
                        rows += r
            finally:
                redis.stop()
        if "page" in args.only:
            r, raw["page"] = bench_page()
            rows += r
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"\n{'figure':<{width}}  {'measured':<{vwidth}}  {'target':<10}  met")
    for figure, value, target, met in rows:
        mark = "-" if met is None else ("yes" if met else "NO")
        print(f"{figure:<{width}}  {value:<{vwidth}}  {target:<10}  {mark}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    raw["rows"] = [{"figure": f, "measured": v, "target": t, "met": m} for f, v, t, m in rows]
    out.write_text(json.dumps(raw, indent=2, default=str))
    print(f"\nresults written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
