"""Issue 2 acceptance flows on real processes: redis-server, gunicorn, RQ workers, stand-ins."""

from __future__ import annotations

import json
import time

import pytest
import requests

from ..harness import Stack, stack_on_own_redis, wait_for

pytestmark = pytest.mark.integration


def test_klcode_add_reaches_ac_and_the_echo_is_suppressed(stack: Stack) -> None:
    stack.map("VIP Customer")
    email = stack.customer("jane@example.com")
    started = time.monotonic()
    stack.klcode_tag(email, "VIP Customer")
    wait_for(lambda: "VIP Customer" in stack.sandbox.ac.tags_of(email), 5, "the tag in AC")
    latency = time.monotonic() - started
    stack.settle()
    assert stack.sandbox.ac.stats.writes["tag_added"] == 1
    assert stack.sandbox.klcode.stats.writes["tag_added"] == 1  # the person's change only
    assert stack.outcomes(email) == [("ac", "add", "echo"), ("klcode", "add", "applied")]
    assert latency < 5


def test_ac_add_reaches_klcode_and_removal_both_ways(stack: Stack) -> None:
    stack.map("Webinar Attendee - March 2026")
    tag = "Webinar Attendee - March 2026"
    email = stack.customer("omar@example.com")
    stack.ac_tag(email, tag)
    wait_for(lambda: tag in stack.sandbox.klcode.tags_of(email), 5, "the tag in KlCode")
    stack.settle()
    stack.ac_tag(email, tag, "remove")
    wait_for(lambda: tag not in stack.sandbox.klcode.tags_of(email), 5, "removal in KlCode")
    stack.settle()
    stack.klcode_tag(email, tag)
    wait_for(lambda: tag in stack.sandbox.ac.tags_of(email), 5, "re-add in AC")
    stack.settle()
    stack.klcode_tag(email, tag, "remove")
    wait_for(lambda: tag not in stack.sandbox.ac.tags_of(email), 5, "removal in AC")
    stack.settle()
    ac, kl = stack.sandbox.ac.stats.writes, stack.sandbox.klcode.stats.writes
    # Exactly one write per real change in each system: no ping-pong.
    assert (ac["tag_added"], ac["tag_removed"], kl["tag_added"], kl["tag_removed"]) == (2, 2, 2, 2)
    outcomes = [o for _, _, o in stack.outcomes(email)]
    assert outcomes.count("applied") == 4 and outcomes.count("echo") == 4


def test_duplicate_delivery_applies_once(stack: Stack) -> None:
    stack.map("Beef Lover")
    email = stack.customer("ana@example.com")
    event = stack.kl_event(email, "Beef Lover", "add", time.time(), event_id="evt_dup")
    answers = [stack.post_klcode(event) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert [a.json()["events"] for a in answers] == [1, 1, 1]  # each one durable
    stack.settle()
    assert stack.redis.hget("tagsync:m:webhooks", "klcode|duplicate|") == b"2"
    assert stack.sandbox.ac.stats.writes["tag_added"] == 1
    assert [e.event_id for e in stack.store.sync_log(email=email) if e.source == "klcode"] == [
        "kl:evt_dup"
    ]


def test_add_then_remove_delivered_out_of_order_ends_removed(stack: Stack) -> None:
    stack.map("Seafood Fan")
    email = stack.customer("ken@example.com")
    now = time.time()
    add = stack.kl_event(email, "Seafood Fan", "add", now - 2)
    remove = stack.kl_event(email, "Seafood Fan", "remove", now - 1)
    assert stack.post_klcode({"events": [remove, add]}).status_code == 202
    stack.settle()
    assert "Seafood Fan" not in stack.sandbox.ac.tags_of(email)
    kl = [o for s, _, o in stack.outcomes(email) if s == "klcode"]
    # Either the add ran first and the remove undid it, or the add came second and was stale.
    assert sorted(kl) in (["applied", "applied"], ["already_in_sync", "stale"])


def test_inactive_or_forbidden_direction_copies_nothing(stack: Stack) -> None:
    stack.map("Churned", active=False)
    stack.map("Reactivated", direction="ac_to_klcode")
    email = stack.customer("eva@example.com")
    stack.klcode_tag(email, "Churned")
    stack.klcode_tag(email, "Reactivated")
    stack.settle()
    assert stack.sandbox.ac.tags_of(email) == set()
    assert stack.sandbox.ac.stats.writes["tag_added"] == 0
    assert sorted(o for _, _, o in stack.outcomes(email)) == ["direction", "inactive"]


def test_unknown_email_is_contact_not_found(stack: Stack) -> None:
    stack.map("New Customer")
    email = stack.customer("only.klcode@example.com", in_ac=False)
    stack.klcode_tag(email, "New Customer")
    entry = wait_for(lambda: stack.store.sync_log(email=email), 10, "a sync-log entry")[0]
    assert entry.outcome == "contact_not_found"
    assert "will look again" in entry.detail  # retried over the next minutes


def test_two_workers_never_exceed_the_shared_ac_rate_limit(stack_factory) -> None:
    stack = stack_factory(
        workers=2, ac_rate_limit=5, sandbox_rate_limit=None
    )  # the stand-in only counts
    stack.map("Loyal Customer", direction="klcode_to_ac")
    emails = [stack.customer(f"c{i}@example.com") for i in range(14)]
    events = [stack.kl_event(e, "Loyal Customer", "add", time.time()) for e in emails]
    assert stack.post_klcode({"events": events}).status_code == 202
    stack.wait_in_ac("Loyal Customer", emails, 30)
    stats = stack.sandbox.ac.stats
    assert stats.to_dict()["total_requests"] >= 28  # a contact lookup and an add for each
    assert stats.max_in_window(1.0) <= 5
    assert stats.statuses.get("429", 0) == 0


def test_redis_down_means_503_then_retry_succeeds(tmp_path) -> None:
    with stack_on_own_redis(tmp_path, appendonly=False, workers=0) as (redis, stack):
        stack.start_web()
        event = stack.kl_event(
            "x@example.com", "VIP Customer", "add", time.time(), event_id="evt_r"
        )
        redis.stop()
        down = stack.post_klcode(event)
        assert down.status_code == 503
        assert down.headers["Retry-After"]
        ready = requests.get(f"{stack.base}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["redis"].startswith("error")
        redis.start_again()
        assert wait_for(
            lambda: stack.post_klcode(event).status_code == 202, 10, "the retry to be accepted"
        )
        assert stack.waiting() == 1


def test_cli_mappings_roundtrip(stack: Stack) -> None:
    ac_id = stack.sandbox.ac.add_tag("At Risk")

    added = stack.cli(
        "mappings",
        "add",
        "--klcode-tag",
        "At Risk",
        "--ac-tag-id",
        str(ac_id),
        "--direction",
        "klcode_to_ac",
    )
    assert added.returncode == 0, added.stderr
    dup = stack.cli("mappings", "add", "--klcode-tag", "at risk", "--ac-tag-id", str(ac_id))
    assert (
        dup.returncode == 1
        and dup.stderr.startswith("tagsync: error:")
        and len(dup.stderr.splitlines()) == 1
    )
    unknown = stack.cli("mappings", "add", "--klcode-tag", "Other", "--ac-tag-id", "99999")
    assert unknown.returncode == 1 and "no tag with id 99999" in unknown.stderr
    bad = stack.cli(
        "mappings",
        "add",
        "--klcode-tag",
        "Other",
        "--ac-tag-id",
        str(ac_id),
        "--direction",
        "sideways",
    )
    assert bad.returncode == 2
    listed = stack.cli("mappings", "list", "--json")
    (m,) = json.loads(listed.stdout)["mappings"]
    assert (m["klcode_tag"], m["ac_tag_name"], m["direction"]) == (
        "At Risk",
        "At Risk",
        "klcode_to_ac",
    )
    assert stack.cli("mappings", "edit", str(m["id"]), "--inactive").returncode == 0
    assert stack.store.get_mapping(m["id"]).active is False
    assert stack.cli("mappings", "delete", str(m["id"])).returncode == 0
    assert stack.cli("mappings", "delete", str(m["id"])).returncode == 1
    hook_url = f"{stack.base}/webhooks/activecampaign/new-token"
    first = stack.cli("ac-webhook", "install", "--url", hook_url)
    second = stack.cli("ac-webhook", "install", "--url", hook_url)
    assert first.returncode == 0 and "installed" in first.stdout
    assert second.returncode == 0 and "already installed" in second.stdout
    assert sum(1 for w in stack.sandbox.ac.webhooks.values() if w["url"] == hook_url) == 1
