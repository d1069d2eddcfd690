"""A C-speed check that a KlCode body is plainly valid, so the receiver can store it as it came.

Validating a batch of 100 events through marshmallow costs several times what a bare endpoint
spends on the whole request; msgspec decodes and checks the same body in C in about twice the
time of `json.loads`. The rules below are a *subset* of the marshmallow schemas in
workers/payloads.py: every body this accepts, those accept too, with as many tag events (the
property tests in tests/unit/test_fastcheck.py hold the two together). Anything else (an
error, an unusual but valid email, another event type, fields beyond DESIGN.md's) returns None,
and the receiver runs the marshmallow path, which writes the answer, 400s included. The pump
later turns the stored body into events with that same marshmallow code.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from workers.payloads import MAX_BATCH, MAX_TAG_LENGTH

# A plain address: a strict subset of marshmallow's Email (dot-atom user, ASCII domain). All of
# a request's addresses are matched in one call, joined by newlines (which no address may hold).
# Possessive runs only prune backtracking, so they match a subset of the plain forms (half the
# time); a domain label is 1-63 characters, letters or digits at both ends.
_EMAIL = (
    r"[A-Za-z0-9_+-]++(?:\.[A-Za-z0-9_+-]++)*+"
    r"@(?:(?=[A-Za-z0-9-]{1,63}\.)[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+\.)++[A-Za-z]{2,6}"
)
_EMAILS = re.compile(rf"(?:{_EMAIL}\n)*{_EMAIL}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A key that must not be there: no value satisfies both bounds.
# Unknown keys are refused too (the marshmallow path ignores them): msgspec would skip their
# values without checking them as strictly as json.loads, which answers 400 for some of them.
_Absent = Annotated[int, msgspec.Meta(gt=0, lt=0)]


class _Customer(msgspec.Struct, forbid_unknown_fields=True):
    id: int | str
    email: Annotated[str, msgspec.Meta(max_length=320)]


class _Tag(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TAG_LENGTH)]


class _Event(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    type: Literal["customer.tag_added", "customer.tag_removed"]
    occurred_at: str  # parsed below, by the very function marshmallow uses
    customer: _Customer
    tag: _Tag


class _Single(_Event):
    events: _Absent = 0  # a body with "events" is a batch to marshmallow: never a single here


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[_Event], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


_SINGLE = msgspec.json.Decoder(_Single)
_BATCH = msgspec.json.Decoder(_Batch)


def klcode_tag_events(body: bytes) -> int | None:
    """How many tag events the body holds, if it is plainly valid; else None."""
    try:
        events: list[_Event] = [_SINGLE.decode(body)]
    except msgspec.ValidationError:
        try:
            events = _BATCH.decode(body).events
        except msgspec.DecodeError:
            return None
    except msgspec.DecodeError:  # not JSON msgspec reads (json.loads may: let it decide)
        return None
    return len(events) if _plain(events) else None


def _plain(events: list[_Event]) -> bool:
    """The checks msgspec cannot express, one pass, regexes run once over joined strings."""
    texts: list[str] = []
    emails: list[str] = []
    try:
        for event in events:
            customer_id = event.customer.id
            if (
                not event.id.strip()
                or not event.tag.name.strip()
                or (type(customer_id) is str and not customer_id.strip())
            ):
                return False
            datetime.fromisoformat(event.occurred_at)  # marshmallow's own ISO parser
            texts += (event.id, event.tag.name, event.customer.email)
            emails.append(event.customer.email)
    except ValueError:
        return False
    # No control characters in ids, tag names (nor addresses: so none holds the newline).
    return not _CONTROL.search("".join(texts)) and bool(_EMAILS.fullmatch("\n".join(emails)))
