"""A small closed-loop HTTP/1.1 load generator (keep-alive, N connections), stdlib only.

Both the tagsync receiver and the bare baseline are measured with it, back to back, on the same
gunicorn configuration, so the ratio between them survives a noisy machine.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[int, int]
    p50_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300) == self.requests


async def _conn(
    host: str,
    port: int,
    reqs: list[bytes],
    stop: float,
    out: LoadResult,
    seq: list[int],
    lat: list[float],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop:
            n = seq[0]
            seq[0] += 1
            start = time.monotonic()
            writer.write(reqs[n % len(reqs)])
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            status = int(status_line.split()[1]) if status_line else 0
            out.statuses[status] = out.statuses.get(status, 0) + 1
            lat.append((time.monotonic() - start) * 1000)
            out.requests += 1
    finally:
        writer.close()


def run(host: str, port: int, reqs: list[bytes], *, seconds: float, connections: int) -> LoadResult:
    """Cycle through prepared raw requests for `seconds` over keep-alive connections."""
    out = LoadResult(0, 0.0, {})
    seq = [0]
    lat: list[float] = []

    async def main() -> None:
        stop = time.monotonic() + seconds
        start = time.monotonic()
        await asyncio.gather(
            *(_conn(host, port, reqs, stop, out, seq, lat) for _ in range(connections))
        )
        out.seconds = time.monotonic() - start

    asyncio.run(main())
    lat.sort()
    if lat:
        out.p50_ms = statistics.median(lat)
        out.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return out


def post(path: str, body: bytes, headers: dict[str, str], host: str = "127.0.0.1") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body
