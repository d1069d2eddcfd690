"""The scale-out set-up on real parts: the gevent web process and the workers on PostgreSQL."""

from __future__ import annotations

import os

import pytest
import requests

from ..harness import Stack, wait_for

POSTGRES_URL = os.environ.get("TAGSYNC_TEST_POSTGRES_URL", "")
ADMIN = "it-admin-token"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.skipif(
        not POSTGRES_URL,
        reason="TAGSYNC_TEST_POSTGRES_URL is not set (.ci/run provides a PostgreSQL server)",
    ),
]


def test_mapping_sync_and_log_through_postgresql(stack_factory) -> None:
    stack: Stack = stack_factory(database_url=POSTGRES_URL, extra_env={"ADMIN_TOKEN": ADMIN})
    auth = {"Authorization": f"Bearer {ADMIN}"}
    tag = "VIP Customer"
    ac_tag_id = stack.sandbox.ac.add_tag(tag)
    created = requests.post(
        f"{stack.base}/api/v1/mappings",
        json={"klcode_tag": tag, "ac_tag_id": ac_tag_id},
        headers=auth,
        timeout=10,
    )
    assert created.status_code == 201, created.text  # written by the web process
    email = stack.customer("pg.customer@example.com")
    stack.klcode_tag(email, tag)
    wait_for(lambda: tag in stack.sandbox.ac.tags_of(email), 10, "the tag in AC")
    stack.settle()
    assert stack.outcomes(email) == [("ac", "add", "echo"), ("klcode", "add", "applied")]
    log = requests.get(
        f"{stack.base}/api/v1/sync-log", params={"email": email}, headers=auth, timeout=10
    )
    assert log.status_code == 200
    assert sorted(e["outcome"] for e in log.json()["entries"]) == ["applied", "echo"]
    listed = requests.get(f"{stack.base}/api/v1/mappings", headers=auth, timeout=10).json()
    assert [m["klcode_tag"] for m in listed["mappings"]] == [tag]
