"""A burst of KlCode adds is coalesced into AC bulk imports, with one outcome per event."""

from __future__ import annotations

import time

import pytest

from ..harness import Stack

pytestmark = pytest.mark.integration


def test_burst_of_adds_goes_through_bulk_import(stack_factory) -> None:
    stack: Stack = stack_factory(ac_rate_limit=20, sandbox_rate_limit=20)
    tag = "VIP Customer"
    stack.map(tag, direction="klcode_to_ac")
    emails = [stack.customer(f"burst{i}@example.com") for i in range(300)]
    stack.index_ac_contacts()  # AC's contacts are known
    stack.sandbox.ac.stats.reset()
    now = time.time()
    events = [stack.kl_event(e, tag, "add", now) for e in emails]
    assert stack.post_klcode({"events": events}).json()["events"] == 300
    stack.wait_in_ac(tag, emails, 60)
    stack.settle()
    stats = stack.sandbox.ac.stats.to_dict()
    assert stats["requests"].get("POST /api/3/import/bulk_import", 0) >= 1
    per_contact = stats["requests"].get("POST /api/3/contactTags", 0)
    assert per_contact < 60  # most went through bulk import, not one request each
    assert stats["statuses"].get("429", 0) == 0
    outcomes = [e.outcome for e in stack.store.sync_log(limit=1000) if e.source == "klcode"]
    assert len(outcomes) == 300 and set(outcomes) == {"applied"}
    assert stack.sandbox.ac.stats.writes["tag_added"] == 300
