"""Settings from the environment, read in one place so every process agrees on them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA_DIR = "./var"
DEFAULT_AC_RATE_LIMIT = 5.0  # requests per second, for the whole AC account
DEFAULT_HTTP_TIMEOUT = 10.0  # seconds, every outbound call
DEFAULT_PORT = 8000
DEFAULT_QUEUE = "tagsync-events"
DEFAULT_RETRY_INTERVALS = (20, 90, 360)  # seconds: a job's delayed retries (workers/retry.py)


def _intervals(env: dict[str, str], name: str) -> tuple[int, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return DEFAULT_RETRY_INTERVALS
    try:
        values = tuple(int(x) for x in raw.split(","))
    except ValueError:
        raise ValueError(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"{name} must be comma-separated non-negative seconds, got {raw!r}")
    return values


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


SANDBOX_FILE = "sandbox.json"


def _running_sandbox(data_dir: Path) -> dict[str, str]:
    """The stand-ins' URLs and public keys, written by `tagsync run` in sandbox mode, so that
    `tagsync mappings add`, `sync-now` and `demo` in another terminal reach the same sandbox."""
    path = data_dir / SANDBOX_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    keys = {
        "ac_url": "AC_API_URL",
        "ac_api_token": "AC_API_TOKEN",
        "klcode_url": "KLCODE_API_URL",
        "klcode_api_key": "KLCODE_API_KEY",
    }
    return {var: str(info[k]) for k, var in keys.items() if info.get(k)}


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Secrets stay here and are never logged (see `redacted`)."""

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    redis_url: str = ""  # empty: embedded server under data_dir
    database_url: str = ""  # empty: SQLite under data_dir
    ac_api_url: str = ""
    ac_api_token: str = field(default="", repr=False)
    ac_webhook_token: str = field(default="", repr=False)
    ac_rate_limit: float = DEFAULT_AC_RATE_LIMIT
    ac_timezone: str = "UTC"  # for AC date_time values that carry no offset
    klcode_api_url: str = ""
    klcode_api_key: str = field(default="", repr=False)
    klcode_webhook_secret: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)
    port: int = DEFAULT_PORT
    http_timeout: float = DEFAULT_HTTP_TIMEOUT
    queue_name: str = DEFAULT_QUEUE
    retry_intervals: tuple[int, ...] = DEFAULT_RETRY_INTERVALS  # seconds between RQ-level retries

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read the documented variables (README, configuration table)."""
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("TAGSYNC_DATA_DIR") or DEFAULT_DATA_DIR)
        if not env.get("AC_API_URL") and not env.get("KLCODE_API_URL"):
            env = {**_running_sandbox(data_dir), **env}
        port_raw = env.get("PORT", "").strip()
        return cls(
            data_dir=data_dir,
            redis_url=env.get("REDIS_URL", "").strip(),
            database_url=env.get("DATABASE_URL", "").strip(),
            ac_api_url=env.get("AC_API_URL", "").strip().rstrip("/"),
            ac_api_token=env.get("AC_API_TOKEN", "").strip(),
            ac_webhook_token=env.get("AC_WEBHOOK_TOKEN", "").strip(),
            ac_rate_limit=_float(env, "AC_RATE_LIMIT", DEFAULT_AC_RATE_LIMIT),
            ac_timezone=env.get("AC_TIMEZONE", "").strip() or "UTC",
            klcode_api_url=env.get("KLCODE_API_URL", "").strip().rstrip("/"),
            klcode_api_key=env.get("KLCODE_API_KEY", "").strip(),
            klcode_webhook_secret=env.get("KLCODE_WEBHOOK_SECRET", "").strip(),
            admin_token=env.get("ADMIN_TOKEN", "").strip(),
            port=int(port_raw) if port_raw else DEFAULT_PORT,
            http_timeout=_float(env, "TAGSYNC_HTTP_TIMEOUT", DEFAULT_HTTP_TIMEOUT),
            queue_name=env.get("TAGSYNC_QUEUE", "").strip() or DEFAULT_QUEUE,
            retry_intervals=_intervals(env, "TAGSYNC_RETRY_INTERVALS"),
        )

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'tagsync.db').resolve()}"
