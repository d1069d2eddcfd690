"""Concurrent webhooks on the real receiver (gunicorn, gevent, group commit, redis-server):
every 202 is backed by exactly one queued job per new event, whoever shared whose write."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
import requests

from workers.queueing import EventQueue

from ..harness import QUEUE, TOKEN, Stack

pytestmark = pytest.mark.integration


def test_concurrent_webhooks_each_queued_exactly_once(stack_factory) -> None:
    stack: Stack = stack_factory(workers=0)  # no pump, no worker: inbox and queue are evidence
    now = time.time()
    singles = [stack.kl_event(f"c{i}@example.com", "VIP", "add", now) for i in range(240)]
    batches = [
        [stack.kl_event(f"b{j}.{i}@example.com", "VIP", "add", now) for i in range(20)]
        for j in range(6)
    ]
    repeats = singles[:30]  # redeliveries, racing their originals
    ac_forms = [
        urlencode(
            {
                "type": "contact_tag_added",
                "date_time": "2024-02-28T07:04:13-06:00",
                "initiated_from": "admin",
                "contact[id]": str(i),
                "contact[email]": f"a{i}@example.com",
                "tag": "VIP",
            }
        )
        for i in range(60)
    ]
    stack.redis.config_resetstat()

    def send(kind: str, payload: object) -> tuple[str, dict[str, int]]:
        if kind == "ac":
            resp = requests.post(
                f"{stack.base}/webhooks/activecampaign/{TOKEN}",
                data=payload,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=10,
            )
        else:
            resp = stack.post_klcode(payload)
        assert resp.status_code == 202, resp.text
        return kind, resp.json()

    work = (
        [("single", e) for e in singles]
        + [("batch", {"events": b}) for b in batches]
        + [("repeat", e) for e in repeats]
        + [("ac", f) for f in ac_forms]
    )
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda w: send(*w), work))

    distinct = len(singles) + 20 * len(batches) + len(ac_forms)
    assert sum(a["events"] for _, a in answers) == distinct + len(repeats)
    assert all(a["events"] == 20 for k, a in answers if k == "batch")
    # Requests in flight together shared Redis writes: fewer appends than requests. And the
    # receiver only appended: no job and no dedup mark exists until the pump runs.
    assert 0 < stack.redis.info("commandstats")["cmdstat_rpush"]["calls"] < len(work)
    assert stack.redis.llen(f"rq:queue:{QUEUE}") == 0
    assert not stack.redis.keys("tagsync:seen:*")
    # Then the pump's step: every event becomes one job, each redelivery a counted duplicate.
    assert EventQueue(stack.redis, QUEUE).drain_all() == distinct + len(repeats)
    queued = stack.redis.lrange(f"rq:queue:{QUEUE}", 0, -1)
    assert len(queued) == len(set(queued)) == distinct
    ids = set()
    for job_id in queued:
        data = json.loads(stack.redis.hget(f"rq:job:{job_id.decode()}", "data"))
        ids.add(data[2][0]["event_id"])
    assert len(ids) == distinct  # one job per event, none lost, none twice
    counts = stack.redis.hgetall("tagsync:m:webhooks")
    duplicates = sum(int(v) for k, v in counts.items() if k.endswith(b"|duplicate|"))
    assert duplicates == len(repeats)
