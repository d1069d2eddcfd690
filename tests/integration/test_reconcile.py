"""Issue 4 on real processes: reconciliation against the stand-ins, with real Redis and workers."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from workers.queueing import enqueue_reconcile

from ..harness import Stack, wait_for

pytestmark = pytest.mark.integration
FAST = {"AC_RATE_LIMIT": "20"}  # the stand-in enforces the same 20/s: a 429 would be our fault


def drift(stack: Stack, tag: str, *, customers: int, kl: range, ac: range) -> list[str]:
    """Customers in both systems, holding `tag` per the ranges, set directly (no webhooks)."""
    emails = [f"r{i}@example.com" for i in range(customers)]
    ac_tag = stack.sandbox.ac.add_tag(tag)
    for i, email in enumerate(emails):
        cid = stack.sandbox.klcode.add_customer(email)
        if i in kl:
            stack.sandbox.klcode.customers[cid]["tags"].add(tag)
        contact = stack.sandbox.ac.add_contact(email)
        if i in ac:
            stack.sandbox.ac.tag_contact(contact, ac_tag, source="admin", notify=False)
    return emails


def holders(stack: Stack, tag: str) -> tuple[set[str], set[str]]:
    kl = {c["email"] for c in stack.sandbox.klcode.customers.values() if tag in c["tags"]}
    ac = {
        e.lower()
        for e in (stack.sandbox.ac.contacts[cid]["email"] for cid in stack.sandbox.ac.contacts)
        if tag in stack.sandbox.ac.tags_of(e)
    }
    return kl, ac


def sync_now(stack: Stack, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "webhooks.cli", "sync-now", *args, "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["reports"][0]


def test_drifted_one_way_mapping_converges_with_bulk_import(stack_factory) -> None:
    stack: Stack = stack_factory(ac_rate_limit=20, sandbox_rate_limit=20)
    tag = "Loyal Customer"
    mid = stack.map(tag, direction="klcode_to_ac")
    drift(
        stack, tag, customers=2000, kl=range(0, 1500), ac=range(470, 1530)
    )  # 470 to add, 30 to remove
    writes = dict(stack.sandbox.ac.stats.writes)
    dry = sync_now(stack, str(mid), "--dry-run")
    assert dry["plan"]["add_ac"]["count"] == 470 and dry["plan"]["remove_ac"]["count"] == 30
    assert dict(stack.sandbox.ac.stats.writes) == writes  # a dry run writes nothing
    report = sync_now(stack, str(mid))
    assert (report["added_ac"], report["removed_ac"], report["failed"]) == (470, 30, 0)
    assert report["bulk_batches"] == 2
    kl, ac = holders(stack, tag)
    assert kl == ac and len(ac) == 1500
    stats = stack.sandbox.ac.stats.to_dict()
    assert stats["requests"]["POST /api/3/import/bulk_import"] == 2
    assert stats["statuses"].get("429", 0) == 0
    assert stack.store.get_mapping(mid).customer_count == 1500
    stack.settle()
    writes = dict(stack.sandbox.ac.stats.writes)
    again = sync_now(stack, str(mid))
    assert again["plan"]["actions"] == 0
    assert dict(stack.sandbox.ac.stats.writes) == writes  # a second Sync Now changes nothing
    summary = [
        e for e in stack.store.sync_log(mapping_id=mid) if e.event_id == f"rc:{report['run_id']}"
    ]
    assert summary and "+470/-30 in AC" in summary[0].detail
    per_customer = stack.store.sync_log(mapping_id=mid, outcome="applied", limit=1000)
    assert len([e for e in per_customer if e.email]) == 500


def test_bidirectional_three_way_through_a_worker(stack: Stack) -> None:
    tag = "Beef Lover"
    mid = stack.map(tag)
    emails = drift(stack, tag, customers=40, kl=range(0, 20), ac=range(10, 30))
    job = enqueue_reconcile(stack.redis, mid)
    assert job is not None
    done = wait_for(
        lambda: Job.fetch(job.id, connection=stack.redis, serializer=JSONSerializer).return_value(),
        60,
        "the reconciliation job",
    )
    assert done["status"] == "done" and done["notes"]  # first run: additions only
    kl, ac = holders(stack, tag)
    assert kl == ac == set(emails[:30])
    stack.settle()
    # Missed webhooks: a removal in AC and an addition in KlCode that nobody reported.
    ac_state = stack.sandbox.ac
    cid, tid = ac_state.contact_by_email(emails[0]), ac_state.tag_by_name(tag)
    ac_state.untag_contact_tag(ac_state.contact_tag(cid, tid), source="admin", notify=False)
    stack.sandbox.klcode.customers[stack.sandbox.klcode.customer_by_email(emails[35])]["tags"].add(
        tag
    )
    report = sync_now(stack, str(mid))
    assert (report["removed_klcode"], report["added_ac"]) == (1, 1)
    kl, ac = holders(stack, tag)
    assert kl == ac == (set(emails[1:30]) | {emails[35]})


def test_realtime_event_is_applied_during_a_long_reconciliation(stack_factory) -> None:
    stack: Stack = stack_factory(workers=2)  # AC at its real 5 requests/s
    tag = "Seafood Fan"
    mid = stack.map(tag, direction="klcode_to_ac")
    drift(stack, tag, customers=40, kl=range(0), ac=range(0, 40))  # 40 removals, two requests each
    vip = stack.map("VIP Customer")
    email = stack.customer("urgent@example.com")
    job = enqueue_reconcile(stack.redis, mid)
    assert job is not None
    wait_for(
        lambda: (
            (
                Job.fetch(job.id, connection=stack.redis, serializer=JSONSerializer).meta.get(
                    "applied"
                )
                or 0
            )
            >= 3
        ),
        30,
        "the reconciliation to be under way",
    )
    started = time.monotonic()
    stack.klcode_tag(email, "VIP Customer")
    wait_for(
        lambda: "VIP Customer" in stack.sandbox.ac.tags_of(email), 10, "the real-time tag in AC"
    )
    latency = time.monotonic() - started
    assert latency < 5
    assert (
        Job.fetch(job.id, connection=stack.redis, serializer=JSONSerializer).get_status()
        != "finished"
    )
    assert vip
