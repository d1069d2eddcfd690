"""Server time to render the admin page's mapping table with 200 mappings (target < 100 ms)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import fakeredis

from mapping_store import Store
from webhooks import create_app

ROUNDS = 30


def measure() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        store.init_schema()
        for i in range(200):
            store.create_mapping(
                klcode_tag=f"Tag {i}",
                ac_tag_id=i + 1,
                ac_tag_name=f"AC Tag {i}",
                direction=("bidirectional", "klcode_to_ac", "ac_to_klcode")[i % 3],
            )
        app = create_app(
            {"TAGSYNC_REDIS": fakeredis.FakeRedis(), "TAGSYNC_STORE": store, "ADMIN_TOKEN": "t"}
        )
        client = app.test_client()
        headers = {"Authorization": "Bearer t"}
        assert client.get("/", headers=headers).status_code == 200  # warm-up, template compiled
        times = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            resp = client.get("/", headers=headers)
            times.append((time.perf_counter() - start) * 1000)
            if resp.status_code != 200 or resp.data.count(b"data-mapping-id") != 200:
                raise RuntimeError(f"bad page: {resp.status_code}")
        store.dispose()
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[int(len(times) * 0.95) - 1],
        "max_ms": times[-1],
    }


if __name__ == "__main__":
    r = measure()
    p50, p95 = r["p50_ms"], r["p95_ms"]
    print(f"admin page, 200 mappings: p50 {p50:.1f} ms, p95 {p95:.1f} ms (target < 100 ms)")
