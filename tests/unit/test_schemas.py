from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validates_schema

from workers import payloads as schemas
from workers.payloads import MAX_BATCH, parse_ac, parse_ac_time, parse_klcode, unflatten_form

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


# -- the direct path: marshmallow's own fields without the Schema machinery ----------------------

_text = st.one_of(
    st.sampled_from(["", " ", "VIP Customer", "a\x00b", "x" * 256, "Ünïcode ✓", "1", "evt_1"]),
    st.text(max_size=20),
)
_emails = st.one_of(
    st.sampled_from(
        [
            "Jane.Doe@Example.com",
            "a@b.co",
            "a..b@x.com",
            ".a@x.com",
            "a@-x.com",
            "a@x",
            "user@localhost",
            "x" * 320 + "@x.com",
            "üser@exämple.com",
            '"quoted"@x.com',
            "a@[127.0.0.1]",
            "",
        ]
    ),
    st.emails(),
    st.text(max_size=30),
)
_times = st.one_of(
    st.sampled_from(
        [
            "2026-03-01T12:00:00Z",
            "2026-03-01T12:00:00.123Z",
            "2026-03-01T12:00:00+02:00",
            "2026-03-01 12:00:00",
            "2026-03-01",
            "2026-02-30T12:00:00Z",
            "12:00",
            "",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=25),
)
_odd = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.lists(st.integers()))


_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
_valid_klcode = st.fixed_dictionaries(
    {
        "id": _names,
        "type": st.sampled_from(["customer.tag_added", "customer.tag_removed"]),
        "occurred_at": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
        "customer": st.fixed_dictionaries(
            {"id": st.one_of(st.integers(), _names), "email": st.emails()}
        ),
        "tag": st.fixed_dictionaries({"name": _names}),
    }
)
_valid_ac = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["contact_tag_added", "contact_tag_removed"]),
        "date_time": _times,
        "contact": st.fixed_dictionaries({"id": _names, "email": st.emails()}),
        "tag": _names,
    },
    optional={"initiated_from": st.sampled_from(["admin", "api", "public", "system"])},
)
_anything = st.one_of(_text, _emails, _times, _odd, st.just(KeyError), st.builds(dict))


def _mutated(valid: st.SearchStrategy, paths: list[tuple[str, ...]]) -> st.SearchStrategy:
    """A valid payload with up to two values replaced (KeyError: removed) or a key added."""

    def apply(item_and_changes: tuple[dict, list]) -> object:
        item, changes = item_and_changes
        for path, value in changes:
            parent = item
            for key in path[:-1]:
                if not isinstance(parent.get(key), dict):
                    break
                parent = parent[key]
            else:
                if value is KeyError:
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1]] = value
        return item

    changes = st.lists(st.tuples(st.sampled_from(paths), _anything), max_size=2)
    return st.tuples(valid, changes).map(apply)


_klcode_items = _mutated(
    _valid_klcode,
    [
        ("id",),
        ("type",),
        ("occurred_at",),
        ("customer",),
        ("customer", "id"),
        ("customer", "email"),
        ("customer", "extra"),
        ("tag",),
        ("tag", "name"),
        ("extra",),
    ],
)
_ac_items = _mutated(
    _valid_ac,
    [
        ("type",),
        ("date_time",),
        ("initiated_from",),
        ("contact",),
        ("contact", "id"),
        ("contact", "email"),
        ("tag",),
        ("list",),
    ],
)


def _same_as_marshmallow(schema: object, direct: object, item: object) -> bool:
    """The direct path either declines or gives exactly what `schema.load` gives."""
    fast = direct.load(item)  # type: ignore[attr-defined]
    if fast is None:
        return False
    assert fast == schema.load(item)  # type: ignore[attr-defined]  # raises if it rejects
    return True


@settings(max_examples=1500, deadline=None)
@given(_klcode_items)
def test_direct_klcode_load_equals_marshmallow(item: object) -> None:
    _same_as_marshmallow(schemas._KLCODE_EVENT, schemas._KLCODE_DIRECT, item)


@settings(max_examples=1500, deadline=None)
@given(_ac_items)
def test_direct_ac_load_equals_marshmallow(item: object) -> None:
    _same_as_marshmallow(schemas._AC_WEBHOOK, schemas._AC_DIRECT, item)


def test_direct_path_takes_the_usual_payloads() -> None:
    # Else the speed-up silently disappears (the answers would still be right).
    assert _same_as_marshmallow(schemas._KLCODE_EVENT, schemas._KLCODE_DIRECT, EVENT)
    form = unflatten_form(ac_form())
    assert _same_as_marshmallow(schemas._AC_WEBHOOK, schemas._AC_DIRECT, form)
    assert schemas._KLCODE_DIRECT.load({**EVENT, "customer": {"id": 1}}) is None


def test_direct_loader_refuses_schemas_it_cannot_follow() -> None:
    class Hooked(Schema):
        class Meta:
            unknown = EXCLUDE

        name = fields.String()

        @validates_schema
        def check(self, data: dict, **_: object) -> None:
            pass

    class Raising(Schema):
        name = fields.String()

    for schema in (Hooked(), Raising()):
        with pytest.raises(TypeError):
            schemas.DirectLoader(schema)
