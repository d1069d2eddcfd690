"""The one event shape both receivers produce and every job consumes (JSON-safe)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any, Literal

from mapping_store import email_key, tag_key

System = Literal["klcode", "ac"]
Op = Literal["add", "remove"]
SYSTEMS: tuple[System, System] = ("klcode", "ac")


def other(system: str) -> System:
    return "ac" if system == "klcode" else "klcode"


@dataclass(frozen=True)
class TagEvent:
    """A tag added to or removed from one customer in one system."""

    source: System
    event_id: str  # dedup key: "kl:<KlCode id>" or "ac:<hash of type, contact, tag, time>"
    op: Op
    email: str  # normalised (email_key)
    tag: str  # as the source spelled it
    occurred_at: float  # unix seconds, when the change happened in the source
    received_at: float  # unix seconds, when our receiver accepted it
    external_id: str | None = None  # KlCode customer id / AC contact id
    initiated_from: str | None = None  # AC only: public, admin, api, system
    reconcile: bool = False  # made by a reconciliation from a listing, not reported by a webhook

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies; this runs for every event the receiver takes.
        return {f: getattr(self, f) for f in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TagEvent:
        return cls(
            source=data["source"],
            event_id=str(data["event_id"]),
            op=data["op"],
            email=email_key(str(data["email"])),
            tag=str(data["tag"]),
            occurred_at=float(data["occurred_at"]),
            received_at=float(data["received_at"]),
            external_id=data.get("external_id"),
            initiated_from=data.get("initiated_from"),
            reconcile=bool(data.get("reconcile", False)),
        )


_FIELDS = tuple(f.name for f in fields(TagEvent))


def klcode_event_id(raw_id: str) -> str:
    return f"kl:{raw_id}"


def ac_event_id(
    event_type: str, contact_id: str, tag: str, date_time: str, initiated_from: str = ""
) -> str:
    """AC sends no event id: a redelivery repeats every field exactly.

    date_time has whole seconds, so `initiated_from` keeps a person's change and our own
    write's echo in the same second apart.
    """
    parts = (
        event_type,
        contact_id.strip(),
        tag_key(tag),
        date_time.strip(),
        initiated_from.strip(),
    )
    raw = "\x1f".join(parts)
    return "ac:" + hashlib.sha256(raw.encode()).hexdigest()[:32]
