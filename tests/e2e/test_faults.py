"""Faults on real processes: an AC 429 storm and a worker SIGKILLed mid-job. Nothing is lost."""

from __future__ import annotations

import os
import signal
import time

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from ..harness import QUEUE, Stack, wait_for

pytestmark = pytest.mark.integration
FAST_RETRIES = {"TAGSYNC_RETRY_INTERVALS": "1,2,4"}


def failed_jobs(stack: Stack) -> int:
    return Queue(QUEUE, connection=stack.redis, serializer=JSONSerializer).failed_job_registry.count


def test_ac_429_storm_recovers_with_nothing_lost(stack_factory) -> None:
    stack: Stack = stack_factory(extra_env=FAST_RETRIES)
    stack.map("Engaged Customer", direction="klcode_to_ac")
    emails = [stack.customer(f"storm{i}@example.com") for i in range(10)]
    stack.sandbox.ac.faults.status, stack.sandbox.ac.faults.retry_after = 429, "1"
    stack.sandbox.ac.faults.until = time.time() + 4  # every AC call is refused for 4 s
    events = [stack.kl_event(e, "Engaged Customer", "add", time.time()) for e in emails]
    assert stack.post_klcode({"events": events}).status_code == 202
    stack.wait_in_ac("Engaged Customer", emails, 60)
    stack.settle()
    assert stack.sandbox.ac.stats.statuses["429"] > 0  # the storm really happened
    assert stack.sandbox.ac.stats.writes["tag_added"] == 10
    for email in emails:
        assert [o for s, _, o in stack.outcomes(email) if s == "klcode"] == ["applied"]
    assert failed_jobs(stack) == 0


def test_worker_sigkilled_mid_job_recovers(stack_factory) -> None:
    stack: Stack = stack_factory(workers=1, extra_env=FAST_RETRIES)
    stack.map("Loyal Customer")
    email = stack.customer("killed@example.com")
    stack.sandbox.ac.faults.delay = 2.0  # AC answers slowly: the job is mid-request when we kill it
    stack.klcode_tag(email, "Loyal Customer")
    wait_for(lambda: stack.redis.zcard(f"rq:wip:{QUEUE}") > 0, 10, "the job to start")
    wait_for(
        lambda: stack.sandbox.ac.stats.to_dict()["total_requests"] >= 1, 10, "the slow AC call"
    )
    ((name, victim),) = [(n, p) for n, p in stack.procs if n.startswith("worker")]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    stack.sandbox.ac.faults.delay = 0.0
    stack.start_worker("worker-replacement")
    wait_for(
        lambda: "Loyal Customer" in stack.sandbox.ac.tags_of(email),
        90,
        "the tag in AC after the kill",
    )
    entry = wait_for(
        lambda: [
            e
            for e in stack.store.sync_log(email=email)
            if e.source == "klcode" and e.outcome != "failed"
        ],
        90,
        "the event's final outcome",
    )[0]
    stack.settle(40)
    assert entry.outcome in ("applied", "already_in_sync")  # the killed write may have landed
    assert stack.sandbox.ac.stats.writes["tag_added"] == 1
    assert stack.sandbox.klcode.stats.writes["tag_added"] == 1  # no ping-pong after the recovery
    assert failed_jobs(stack) == 0
