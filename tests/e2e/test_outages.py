"""Issue 6 fault injection on real processes. Each test ends with an exact account: every event
sent was applied, or recorded with a reason and replayable; nothing was applied twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
from rq import Queue
from rq.serializers import JSONSerializer

from mapping_store import Store
from workers.queueing import EventQueue

from ..harness import QUEUE, Stack, stack_on_own_redis, wait_for

pytestmark = pytest.mark.integration


def failed(stack: Stack) -> int:
    return Queue(QUEUE, connection=stack.redis, serializer=JSONSerializer).failed_job_registry.count


def final_outcomes(store: Store, emails: list[str], source: str = "klcode") -> list[str]:
    return [[e.outcome for e in store.sync_log(email=m) if e.source == source][0] for m in emails]


def test_all_workers_down_then_back(stack_factory) -> None:
    stack: Stack = stack_factory(workers=0)
    stack.map("At Risk", direction="klcode_to_ac")
    emails = [stack.customer(f"down{i}@example.com") for i in range(6)]
    for e in emails:
        stack.klcode_tag(e, "At Risk")
    wait_for(lambda: stack.waiting() == 6, 10, "six durable events")
    assert all("At Risk" not in stack.sandbox.ac.tags_of(e) for e in emails)
    stack.start_worker()
    stack.start_worker()
    stack.wait_in_ac("At Risk", emails, 30)
    stack.settle()
    assert final_outcomes(stack.store, emails) == ["applied"] * 6
    assert stack.sandbox.ac.stats.writes["tag_added"] == 6


def test_redis_restart_keeps_accepted_events(tmp_path: Path) -> None:
    """202 means durable: with AOF on, events accepted before a Redis restart are applied after."""
    with stack_on_own_redis(tmp_path, appendonly=True, workers=0) as (redis, stack):
        stack.start_web()
        stack.map("Churned", direction="klcode_to_ac")
        emails = [stack.customer(f"aof{i}@example.com") for i in range(5)]
        events = [stack.kl_event(e, "Churned", "add", time.time()) for e in emails]
        assert stack.post_klcode({"events": events[:3]}).json()["events"] == 3
        assert EventQueue(stack.redis, QUEUE).drain_all() == 3  # a pump's step: now jobs
        assert stack.post_klcode({"events": events[3:]}).json()["events"] == 2  # in the inbox
        redis.stop()
        late = stack.kl_event("x@example.com", "Churned", "add", time.time())
        assert stack.post_klcode(late).status_code == 503
        redis.start_again()
        assert stack.redis.llen(f"rq:queue:{QUEUE}") == 3 and stack.waiting() == 5
        assert stack.post_klcode(events[0]).status_code == 202  # a redelivery
        stack.start_worker()
        stack.wait_in_ac("Churned", emails, 30)
        stack.settle()
        # The dedup marks survived too: the redelivery was recognised, not applied again.
        assert stack.sandbox.ac.stats.writes["tag_added"] == 5
        assert stack.redis.hget("tagsync:m:webhooks", "klcode|duplicate|") == b"1"


def test_redis_down_the_senders_retry_succeeds(tmp_path: Path) -> None:
    """KlCode retries a 503; once Redis is back, its retry is accepted and applied."""
    with stack_on_own_redis(tmp_path, appendonly=False, workers=1) as (redis, stack):
        stack.start()
        stack.map("Reactivated", direction="klcode_to_ac")
        email = stack.customer("retry@example.com")
        redis.stop()
        stack.klcode_tag(email, "Reactivated")  # the stand-in's first delivery meets a 503
        wait_for(
            lambda: stack.sandbox.klcode.stats.delivery_failures >= 1,
            10,
            "a delivery refused with 503",
        )
        redis.start_again()
        stack.start_worker("worker-after-restart")
        stack.wait_in_ac("Reactivated", [email], 30)


@pytest.mark.parametrize("system", ["ac", "klcode"])
def test_outage_longer_than_retries_ends_failed_then_replay_applies(
    stack_factory, system: str
) -> None:
    stack: Stack = stack_factory(extra_env={"TAGSYNC_RETRY_INTERVALS": "1,1"})
    tag = "Engaged Customer"
    stack.map(tag)
    emails = [stack.customer(f"out-{system}{i}@example.com") for i in range(4)]
    down = stack.sandbox.ac if system == "ac" else stack.sandbox.klcode
    down.faults.status, down.faults.until = 503, time.time() + 600  # down until we say so
    for e in emails:
        (stack.klcode_tag if system == "ac" else stack.ac_tag)(e, tag)
    wait_for(lambda: failed(stack) == 4, 60, "every event to exhaust its retries")
    outcomes = final_outcomes(stack.store, emails, "klcode" if system == "ac" else "ac")
    assert outcomes == ["failed"] * 4
    listed = stack.cli("failed", "list")
    assert listed.returncode == 0 and listed.stdout.count("503") >= 4  # why each failed
    down.faults.until = 0  # back up
    replay = stack.cli("failed", "replay", *(["--all"] if system == "ac" else ["--since", "10m"]))
    assert replay.returncode == 0 and "requeued 4" in replay.stdout
    holder = stack.sandbox.klcode if system == "klcode" else stack.sandbox.ac
    wait_for(
        lambda: all(tag in holder.tags_of(e) for e in emails), 30, "the replayed events applied"
    )
    stack.settle()
    assert failed(stack) == 0
    assert holder.stats.writes["tag_added"] == 4  # each applied once


def test_outage_within_the_retry_schedule_heals_itself(stack_factory) -> None:
    stack: Stack = stack_factory(extra_env={"TAGSYNC_RETRY_INTERVALS": "2,4,8"})
    stack.map("New Customer", direction="klcode_to_ac")
    emails = [stack.customer(f"heal{i}@example.com") for i in range(4)]
    stack.sandbox.ac.faults.status, stack.sandbox.ac.faults.until = 500, time.time() + 6
    for e in emails:
        stack.klcode_tag(e, "New Customer")
    stack.wait_in_ac("New Customer", emails, 60)
    stack.settle()
    assert final_outcomes(stack.store, emails) == ["applied"] * 4
    assert stack.sandbox.ac.stats.statuses["500"] > 0 and failed(stack) == 0


def test_slow_ac_times_out_and_no_worker_hangs(stack_factory) -> None:
    stack: Stack = stack_factory(
        workers=1, extra_env={"TAGSYNC_HTTP_TIMEOUT": "1", "TAGSYNC_RETRY_INTERVALS": "1,2"}
    )
    stack.map("Seafood Fan", direction="klcode_to_ac")
    stack.map("Beef Lover", direction="ac_to_klcode")
    slow, other = stack.customer("slow@example.com"), stack.customer("other@example.com")
    stack.sandbox.ac.faults.delay = 5.0
    stack.klcode_tag(slow, "Seafood Fan")
    (entry,) = wait_for(
        lambda: [e for e in stack.store.sync_log(email=slow) if e.outcome == "failed"],
        30,
        "a timeout recorded",
    )
    assert "timeout" in entry.detail  # the 1 s timeout fired; the 5 s answer was not waited for
    stack.sandbox.ac.faults.delay = 0.0
    stack.ac_tag(other, "Beef Lover")  # the one worker is free: a later event still flows
    wait_for(
        lambda: "Beef Lover" in stack.sandbox.klcode.tags_of(other), 30, "the next event applied"
    )
    wait_for(
        lambda: "Seafood Fan" in stack.sandbox.ac.tags_of(slow),
        30,
        "the slow one retried and applied",
    )


def test_same_webhook_five_times_concurrently(stack: Stack) -> None:
    stack.map("VIP Customer", direction="klcode_to_ac")
    email = stack.customer("five@example.com")
    event = stack.kl_event(email, "VIP Customer", "add", time.time(), event_id="evt_five")
    answers: list[requests.Response] = []
    lock = threading.Lock()
    barrier = threading.Barrier(5)

    def post() -> None:
        barrier.wait()
        r = stack.post_klcode(event)
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=post) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [202] * 5
    assert [a.json()["events"] for a in answers] == [1] * 5  # each one durable
    stack.settle()
    assert stack.redis.hget("tagsync:m:webhooks", "klcode|duplicate|") == b"4"
    assert stack.sandbox.ac.stats.writes["tag_added"] == 1
    assert [e.outcome for e in stack.store.sync_log(email=email) if e.source == "klcode"] == [
        "applied"
    ]


def test_replay_after_a_newer_removal_does_not_resurrect_the_tag(stack_factory) -> None:
    stack: Stack = stack_factory(extra_env={"TAGSYNC_RETRY_INTERVALS": "1"})
    stack.map("Churned", direction="klcode_to_ac")
    email = stack.customer("ghost@example.com")
    stack.sandbox.ac.faults.status, stack.sandbox.ac.faults.until = 503, time.time() + 600
    stack.klcode_tag(email, "Churned")
    wait_for(lambda: failed(stack) == 1, 60, "the add to fail for good")
    stack.sandbox.ac.faults.until = 0
    stack.klcode_tag(email, "Churned", "remove")  # newer: the customer is no longer churned
    stack.settle()
    assert stack.cli("failed", "replay", "--all").returncode == 0
    stack.settle()
    assert "Churned" not in stack.sandbox.ac.tags_of(email)
    outcomes = [e.outcome for e in stack.store.sync_log(email=email) if e.source == "klcode"]
    assert sorted(outcomes) == ["already_in_sync", "stale"]  # the replayed add was stale


def test_logs_mask_emails_and_never_show_secrets(stack: Stack) -> None:
    stack.map("Loyal Customer")
    email = stack.customer("private.person@example.com")
    stack.klcode_tag(email, "Loyal Customer")
    wait_for(lambda: "Loyal Customer" in stack.sandbox.ac.tags_of(email), 10, "the tag in AC")
    stack.settle()
    logs = "\n".join(p.read_text() for p in stack.tmp.glob("*.log"))
    assert "p***@example.com" in logs
    assert email not in logs
    for secret in (
        stack.env["KLCODE_WEBHOOK_SECRET"],
        stack.env["AC_API_TOKEN"],
        stack.env["KLCODE_API_KEY"],
    ):
        assert secret not in logs
    assert stack.env["AC_WEBHOOK_TOKEN"] not in logs
