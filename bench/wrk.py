"""Load through wrk (Debian's `wrk`) when it is installed: a C load generator leaves the two
cores to the server under test far more than a Python client can. Requests are prepared in
advance (signed, unique ids) and cycled through by a small Lua script."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.loadgen import LoadResult

CHUNK = 10_000  # requests per Lua function


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(s: str) -> str:
    level = "=" * 4
    while f"]{level}]" in s:
        level += "="
    return f"[{level}[{s}]{level}]"


def run(
    url: str, requests: list[tuple[str, dict[str, str], bytes]], *, seconds: float, connections: int
) -> LoadResult:
    lines = ["local reqs = {}"]
    for start in range(0, len(requests), CHUNK):  # Lua allows 65,536 constants per function
        lines.append("do local function add()")
        for path, headers, body in requests[start : start + CHUNK]:
            hdrs = ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items())
            lines.append(
                f'reqs[#reqs + 1] = wrk.format("POST", {_lua_string(path)}, {{{hdrs}}}, '
                f"{_lua_string(body.decode())})"
            )
        lines.append("end add() end")
    lines.append(
        "local n = 0\nrequest = function()\n  n = n + 1\n  return reqs[(n % #reqs) + 1]\nend"
    )
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "bench.lua"
        script.write_text("\n".join(lines))
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def pct(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not m:
            return 0.0
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    bad = int(non2xx.group(1)) if non2xx else 0
    statuses = {202: total - bad, **({500: bad} if bad else {})}
    return LoadResult(total, total / rps if rps else 0.0, statuses, pct("50"), pct("99"))
