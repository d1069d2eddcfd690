from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qsl

import pytest
from marshmallow import ValidationError

from webhooks.schemas import MAX_BATCH, parse_ac, parse_ac_time, parse_klcode, unflatten_form

NOW = datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone.utc).timestamp()
EVENT = {
    "id": "evt_9f2c1a",
    "type": "customer.tag_added",
    "occurred_at": "2026-03-01T12:00:00Z",
    "customer": {"id": 1042, "email": "Jane.Doe@Example.com"},
    "tag": {"name": "VIP Customer"},
}
# activecampaign.md 4.4 (a), as the raw form body AC posts.
AC_RAW = (
    "type=contact_tag_added&date_time=2024-02-28T07%3A04%3A13-06%3A00&initiated_from=admin&initiated_by=admin"
    "&list=0&contact%5Bid%5D=3&contact%5Bemail%5D=code.test%40gmail.com&contact%5Bfirst_name%5D=John"
    "&contact%5Blast_name%5D=Wick&contact%5Bphone%5D=&contact%5Bip%5D=0.0.0.0&contact%5Btags%5D=tag1%2C+tag2"
    "&contact%5Bcustomer_acct_name%5D=&contact%5Borgname%5D=&customer_acct_name=&customer_acct_id=0&orgname=&tag=tag2"
)


def ac_form(raw: str = AC_RAW, **overrides: str) -> dict[str, str]:
    form = dict(parse_qsl(raw, keep_blank_values=True))
    form.update(overrides)
    return form


def test_klcode_single_event() -> None:
    parsed = parse_klcode(EVENT, received_at=NOW)
    (ev,) = parsed.events
    assert (ev.source, ev.event_id, ev.op, ev.email, ev.tag) == (
        "klcode",
        "kl:evt_9f2c1a",
        "add",
        "jane.doe@example.com",
        "VIP Customer",
    )
    assert ev.occurred_at == NOW - 5
    assert ev.external_id == "1042"


def test_klcode_batch_with_other_types_ignored() -> None:
    other = {"id": "evt_2", "type": "customer.updated", "whatever": 1}
    removed = {**EVENT, "id": "evt_3", "type": "customer.tag_removed"}
    parsed = parse_klcode({"events": [EVENT, other, removed]}, received_at=NOW)
    assert [e.op for e in parsed.events] == ["add", "remove"]
    assert parsed.ignored == 1


def test_klcode_field_errors_name_the_field_and_position() -> None:
    bad = {**EVENT, "customer": {"id": 1, "email": "not-an-email"}, "occurred_at": "yesterday"}
    with pytest.raises(ValidationError) as exc:
        parse_klcode({"events": [EVENT, bad]}, received_at=NOW)
    errors = exc.value.messages["events"][1]
    assert set(errors) == {"customer", "occurred_at"}
    assert "email" in errors["customer"]


@pytest.mark.parametrize(
    "body",
    [
        [EVENT],
        "text",
        {"events": "nope"},
        {"events": [EVENT] * (MAX_BATCH + 1)},
        {**EVENT, "tag": {"name": "  "}},
        {**EVENT, "tag": {"name": "bad\x00tag"}},
        {**EVENT, "tag": {"name": "x" * 256}},
        {**EVENT, "customer": {"id": True, "email": "a@b.co"}},
        {k: v for k, v in EVENT.items() if k != "id"},
        {"events": [1]},
    ],
)
def test_klcode_rejects_malformed(body: object) -> None:
    with pytest.raises(ValidationError):
        parse_klcode(body, received_at=NOW)


def test_klcode_future_timestamps_are_clamped() -> None:
    future = {**EVENT, "occurred_at": "2030-01-01T00:00:00Z"}
    (ev,) = parse_klcode(future, received_at=NOW).events
    assert ev.occurred_at == NOW + 300


def test_ac_real_sample() -> None:
    (ev,) = parse_ac(ac_form(), received_at=NOW).events
    assert (ev.source, ev.op, ev.email, ev.tag, ev.external_id, ev.initiated_from) == (
        "ac",
        "add",
        "code.test@gmail.com",
        "tag2",
        "3",
        "admin",
    )
    assert ev.occurred_at == datetime(2024, 2, 28, 13, 4, 13, tzinfo=timezone.utc).timestamp()
    assert ev.event_id.startswith("ac:")


def test_ac_dedup_key_is_stable_and_specific() -> None:
    a = parse_ac(ac_form(), received_at=NOW).events[0]
    again = parse_ac(ac_form(), received_at=NOW + 60).events[0]
    removed = parse_ac(ac_form(type="contact_tag_removed"), received_at=NOW).events[0]
    later = parse_ac(ac_form(date_time="2024-02-28T07:04:14-06:00"), received_at=NOW).events[0]
    assert a.event_id == again.event_id
    assert len({a.event_id, removed.event_id, later.event_id}) == 3


def test_ac_naive_date_time_uses_account_zone() -> None:
    when = parse_ac_time("2013-07-18 08:46:33", "America/Chicago")
    assert when.utcoffset().total_seconds() == -5 * 3600
    assert parse_ac_time("2013-07-18 08:46:33", "UTC").tzinfo is not None


def test_ac_other_types_are_ignored() -> None:
    parsed = parse_ac({"type": "subscribe", "date_time": "2013-07-18 08:46:33"}, received_at=NOW)
    assert parsed.events == [] and parsed.ignored == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"contact[email]": "nope"},
        {"tag": ""},
        {"date_time": "soon"},
        {"contact[id]": ""},
        {"type": ""},
    ],
)
def test_ac_rejects_malformed(overrides: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        parse_ac(ac_form(**overrides), received_at=NOW)


def test_unflatten_form() -> None:
    out = unflatten_form({"contact[email]": "a@b.c", "contact[fields][1]": "x", "tag": "t"})
    assert out == {"contact": {"email": "a@b.c"}, "tag": "t"}
