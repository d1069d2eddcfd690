"""`tagsync demo`: drive the sandbox through the seed document's use cases and time each one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import requests

POLL = 0.05  # seconds between looks at the target system
DEADLINE = 30.0  # seconds a step may take before the demo calls it failed


class Demo:
    def __init__(self, info: dict[str, str], echo: Callable[[str], None] = click.echo) -> None:
        self.ac = info["ac_url"]
        self.kl = info["klcode_url"]
        self.kl_key = info["klcode_api_key"]
        self.echo = echo
        self.http = requests.Session()
        self.timings: list[tuple[str, float]] = []

    # -- the two systems, as a person would use them ---------------------------------------

    def tag(self, system: str, email: str, tag: str, op: str = "add") -> None:
        base = self.kl if system == "klcode" else self.ac
        resp = self.http.post(
            f"{base}/_sandbox/tag", json={"email": email, "tag": tag, "op": op}, timeout=10
        )
        resp.raise_for_status()

    def tags(self, system: str, email: str) -> set[str] | None:
        """The customer's tags in `system`, or None if the customer is not there."""
        if system == "klcode":
            resp = self.http.get(f"{self.kl}/_sandbox/customers/{email}", timeout=10)
        else:
            resp = self.http.get(f"{self.ac}/_sandbox/contacts/{email}", timeout=10)
        return set(resp.json().get("tags", [])) if resp.ok else None

    def has(self, system: str, email: str, tag: str) -> bool:
        return tag in (self.tags(system, email) or set())

    def customer_without(self, tag: str) -> str:
        """A customer present in both systems who holds `tag` in neither."""
        from sandbox.seed import customers  # noqa: PLC0415 - the sandbox's own catalogue

        for email, _, _ in customers():
            kl, ac = self.tags("klcode", email), self.tags("ac", email)
            if kl is not None and ac is not None and tag not in kl | ac:
                return email
        raise click.ClickException(
            f"the sandbox has no customer left without {tag!r}; restart `tagsync run`"
        )

    def wait(self, label: str, cond: Callable[[], bool], started: float) -> None:
        while not cond():
            if time.monotonic() - started > DEADLINE:
                raise click.ClickException(
                    f"{label}: not synced after {DEADLINE:.0f} s (see `tagsync log`)"
                )
            time.sleep(POLL)
        took = time.monotonic() - started
        self.timings.append((label, took))
        self.echo(f"   ✓ {label} in {took:.2f} s")

    # -- the use cases ---------------------------------------------------------------------

    def vip(self) -> None:
        email = self.customer_without("VIP Customer")
        self.echo(f"1. VIP at 10 orders: KlCode's order-count event tags {email} 'VIP Customer'")
        t = time.monotonic()
        self.tag("klcode", email, "VIP Customer")
        self.wait(
            "'VIP Customer' reached ActiveCampaign (the VIP automation can start)",
            lambda: self.has("ac", email, "VIP Customer"),
            t,
        )

    def reengagement(self) -> None:
        cancelled, reactivated = "Cancelled - Last 30 Days", "Reactivated"
        email = self.customer_without(cancelled)
        self.echo(f"2. Re-engagement: {email} cancels, then reactivates")
        t = time.monotonic()
        self.tag("klcode", email, cancelled)
        self.wait(
            f"'{cancelled}' reached ActiveCampaign (win-back series)",
            lambda: self.has("ac", email, cancelled),
            t,
        )
        t = time.monotonic()
        self.tag("klcode", email, cancelled, "remove")
        self.tag("klcode", email, reactivated)
        self.wait(
            f"'{cancelled}' removed and '{reactivated}' added in ActiveCampaign",
            lambda: not self.has("ac", email, cancelled) and self.has("ac", email, reactivated),
            t,
        )

    def webinar(self) -> None:
        tag = "Webinar Attendee - March 2026"
        email = self.customer_without(tag)
        self.echo(f"3. Webinar: a marketer tags {email} in ActiveCampaign")
        t = time.monotonic()
        self.tag("ac", email, tag)
        self.wait(f"'{tag}' reached KlCode", lambda: self.has("klcode", email, tag), t)

    def run(self) -> list[tuple[str, float]]:
        self.vip()
        self.reengagement()
        self.webinar()
        slowest = max(t for _, t in self.timings)
        self.echo(
            f"\nAll synced; slowest step {slowest:.2f} s. `tagsync log` shows every decision."
        )
        return self.timings


def load_sandbox_info(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "sandbox.json"
    if not path.exists():
        raise click.ClickException(
            f"no sandbox running for {data_dir}: start `tagsync run` (with no AC/KlCode URLs) first"
        )
    return dict(json.loads(path.read_text()))
