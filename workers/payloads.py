"""marshmallow schemas for both webhooks; they turn a valid payload into TagEvents.

In workers/ because both ingest steps use them: the receiver to answer (400s with field-level
messages), the pump to read the raw KlCode bodies the receiver stored (workers/queueing.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing, validate

from mapping_store import email_key

from .events import TagEvent, ac_event_id, klcode_event_id

MAX_BATCH = 1000  # events in one KlCode request
MAX_TAG_LENGTH = 255
MAX_FUTURE = 300.0  # seconds an event may claim to lie in the future before we use our clock
KLCODE_TYPES = {"customer.tag_added": "add", "customer.tag_removed": "remove"}
AC_TYPES = {"contact_tag_added": "add", "contact_tag_removed": "remove"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BRACKET_KEY = re.compile(r"([^\[\]]+)\[([^\[\]]*)\]")  # contact[email]


def _no_control(value: str) -> None:
    if _CONTROL.search(value):
        raise ValidationError("must not contain control characters")
    if not value.strip():
        raise ValidationError("must not be blank")


class _Strict(Schema):
    class Meta:
        unknown = EXCLUDE  # senders add fields over time; ignore what we do not use


class TagNameField(fields.String):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            validate=[validate.Length(min=1, max=MAX_TAG_LENGTH), _no_control], **kwargs
        )


class CustomerIdField(fields.Raw):
    """KlCode customer ids come as numbers or strings; anything else is a sender bug."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
            raise ValidationError("must be a number or a string")
        return value


class KlCodeCustomerSchema(_Strict):
    id = CustomerIdField(required=True)
    email = fields.Email(required=True, validate=validate.Length(max=320))


class KlCodeTagSchema(_Strict):
    name = TagNameField(required=True)


class KlCodeEventSchema(_Strict):
    id = fields.String(required=True, validate=[validate.Length(min=1, max=128), _no_control])
    type = fields.String(required=True, validate=validate.OneOf(list(KLCODE_TYPES)))
    occurred_at = fields.AwareDateTime(required=True, default_timezone=timezone.utc)
    customer = fields.Nested(KlCodeCustomerSchema, required=True)
    tag = fields.Nested(KlCodeTagSchema, required=True)


class ACContactSchema(_Strict):
    id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    email = fields.Email(required=True, validate=validate.Length(max=320))


class ACWebhookSchema(_Strict):
    type = fields.String(required=True, validate=validate.OneOf(list(AC_TYPES)))
    date_time = fields.String(required=True, validate=validate.Length(min=1, max=64))
    initiated_from = fields.String(load_default=None, validate=validate.Length(max=32))
    contact = fields.Nested(ACContactSchema, required=True)
    tag = TagNameField(required=True)


class DirectLoader:
    """`schema.load`'s result for a payload it accepts, from the schema's own field objects
    (so the same parsing and validators), without the Schema machinery around them: under
    half the cost, on the receiver's hot path. Returns None for anything not plainly valid;
    the caller then runs `schema.load` itself, for the result or the field-level errors.

    Only for schemas it can follow exactly: unknown fields excluded, no hooks, plain fields and
    Nested (checked here; the equivalence by property tests in tests/unit/test_schemas.py).
    """

    def __init__(self, schema: Schema) -> None:
        if schema.unknown != EXCLUDE or any(schema._hooks.values()) or schema.many:
            raise TypeError(f"{type(schema).__name__}: not loadable directly")
        self._fields: list[tuple[str, str, fields.Field, DirectLoader | None]] = []
        for name, field in schema.load_fields.items():
            nested = None
            if isinstance(field, fields.Nested):
                if field.many or not isinstance(field.schema, Schema):
                    raise TypeError(f"{name}: only single nested schemas")
                nested = DirectLoader(field.schema)
            self._fields.append((field.data_key or name, field.attribute or name, field, nested))

    def load(self, data: Any) -> dict[str, Any] | None:
        if type(data) is not dict:
            return None
        out: dict[str, Any] = {}
        for key, attr, field, nested in self._fields:
            if key not in data:
                if field.required:
                    return None
                default = field.load_default
                if default is not missing:
                    out[attr] = default() if callable(default) else default
                continue
            if nested is not None:
                loaded = nested.load(data[key])
                if loaded is None:
                    return None
                out[attr] = loaded
                continue
            try:
                out[attr] = field.deserialize(data[key], key, data)
            except ValidationError:
                return None
        return out


# Built once: a marshmallow schema's construction (deep copies of its fields) costs far more
# than a load, and loading does not mutate the instance, so threads can share it.
_KLCODE_EVENT = KlCodeEventSchema()
_AC_WEBHOOK = ACWebhookSchema()
_KLCODE_DIRECT = DirectLoader(_KLCODE_EVENT)
_AC_DIRECT = DirectLoader(_AC_WEBHOOK)


def _load(schema: Schema, direct: DirectLoader, data: Any) -> dict[str, Any]:
    """Raises ValidationError with field-level messages, exactly as `schema.load` does."""
    loaded = direct.load(data)
    return schema.load(data) if loaded is None else loaded


@dataclass
class Parsed:
    events: list[TagEvent]
    ignored: int  # well-formed events of other types


def _epoch(value: datetime, received_at: float) -> float:
    # A sender clock far ahead would otherwise make its events "newest" for good.
    return min(value.timestamp(), received_at + MAX_FUTURE)


def parse_klcode(body: Any, *, received_at: float) -> Parsed:
    """One event or {"events": [...]}.

    Raises:
        ValidationError: with field-level messages (indexed by position in a batch).
    """
    if isinstance(body, dict) and "events" in body:
        items = body["events"]
        if not isinstance(items, list):
            raise ValidationError({"events": ["must be a list of events"]})
        if len(items) > MAX_BATCH:
            raise ValidationError(
                {"events": [f"at most {MAX_BATCH} events per request, got {len(items)}"]}
            )
        batched = True
    elif isinstance(body, dict):
        items, batched = [body], False
    else:
        raise ValidationError({"_schema": ["body must be a JSON object"]})
    schema = _KLCODE_EVENT
    errors: dict[Any, Any] = {}
    events: list[TagEvent] = []
    ignored = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            errors[i] = {"_schema": ["event must be a JSON object"]}
            continue
        kind = item.get("type")
        if not isinstance(kind, str) or not kind:
            errors[i] = {"type": ["Missing data for required field."]}
            continue
        if kind not in KLCODE_TYPES:
            ignored += 1  # other KlCode events are acknowledged, not processed
            continue
        try:
            data = _load(schema, _KLCODE_DIRECT, item)
        except ValidationError as exc:
            errors[i] = exc.messages
            continue
        events.append(
            TagEvent(
                source="klcode",
                event_id=klcode_event_id(data["id"]),
                op=KLCODE_TYPES[data["type"]],  # type: ignore[arg-type]
                email=email_key(data["customer"]["email"]),
                tag=data["tag"]["name"].strip(),
                occurred_at=_epoch(data["occurred_at"], received_at),
                received_at=received_at,
                external_id=str(data["customer"]["id"]),
            )
        )
    if errors:
        raise ValidationError({"events": errors} if batched else errors[0])
    return Parsed(events, ignored)


def unflatten_form(form: dict[str, str]) -> dict[str, Any]:
    """`contact[email]=x` -> {"contact": {"email": "x"}}; deeper keys are dropped."""
    out: dict[str, Any] = {}
    for key, value in form.items():
        m = _BRACKET_KEY.fullmatch(key)
        if m:
            parent = out.setdefault(m.group(1), {})
            if isinstance(parent, dict):
                parent[m.group(2)] = value
        elif "[" not in key:
            out.setdefault(key, value)
    return out


def parse_ac_time(value: str, tz_name: str) -> datetime:
    """AC stamps either `2024-02-28T07:04:13-06:00` or `2013-07-18 08:46:33` (account time)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(
            "must be a date and time like 2024-02-28T07:04:13-06:00", "date_time"
        ) from None
    if parsed.tzinfo is None:
        try:
            parsed = parsed.replace(tzinfo=ZoneInfo(tz_name))
        except (ZoneInfoNotFoundError, ValueError):
            parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def parse_ac(form: dict[str, str], *, received_at: float, tz_name: str = "UTC") -> Parsed:
    """An AC account webhook, already form-decoded into flat bracket keys.

    Raises:
        ValidationError: with field-level messages.
    """
    data = unflatten_form(form)
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValidationError({"type": ["Missing data for required field."]})
    if kind not in AC_TYPES:
        return Parsed([], 1)
    loaded = _load(_AC_WEBHOOK, _AC_DIRECT, data)
    when = parse_ac_time(loaded["date_time"], tz_name)
    contact = loaded["contact"]
    event = TagEvent(
        source="ac",
        event_id=ac_event_id(
            kind,
            contact["id"],
            loaded["tag"],
            loaded["date_time"],
            loaded.get("initiated_from") or "",
        ),
        op=AC_TYPES[kind],  # type: ignore[arg-type]
        email=email_key(contact["email"]),
        tag=loaded["tag"].strip(),
        occurred_at=_epoch(when, received_at),
        received_at=received_at,
        external_id=contact["id"].strip(),
        initiated_from=loaded.get("initiated_from"),
    )
    return Parsed([event], 0)
