"""The mapping store: plain functions over SQLAlchemy, no Flask, no RQ.

Callers get frozen dataclasses back, never ORM rows, so nothing holds a session open across
an HTTP call or a job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from .models import (
    DIRECTIONS,
    OUTCOMES,
    SCHEDULES,
    Base,
    SchemaVersion,
    SyncLogEntry,
    TagMapping,
    email_key,
    tag_key,
    utcnow,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SQLITE_BUSY_TIMEOUT = 30  # seconds a writer waits for another process's transaction
_PG_SCHEMA_LOCK = 0x7461_6773  # advisory lock id ("tags"): one migrator at a time
DEFAULT_LOG_LIMIT = 100
MAX_LOG_LIMIT = 1000


class StoreError(Exception):
    """Base of the store's errors."""


class MappingNotFound(StoreError):
    pass


class DuplicateMapping(StoreError):
    """The KlCode tag or the AC tag id is already mapped."""

    def __init__(self, field: str, value: object) -> None:
        super().__init__(f"{field} {value!r} is already mapped")
        self.field = field
        self.value = value


class InvalidMapping(StoreError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Mapping:
    id: int
    klcode_tag: str
    ac_tag_id: int
    ac_tag_name: str
    direction: str
    active: bool
    schedule: str
    customer_count: int | None
    customer_count_at: datetime | None
    last_synced_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def allows(self, source: str, target: str) -> bool:
        """Whether a change seen in `source` may be copied to `target` ("klcode" or "ac")."""
        if self.direction == "bidirectional":
            return source != target
        return self.direction == f"{source}_to_{target}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("customer_count_at", "last_synced_at", "created_at", "updated_at"):
            out[name] = _iso(out[name])
        return out


@dataclass(frozen=True)
class LogEntry:
    id: int
    at: datetime
    source: str
    event_id: str | None
    email: str | None
    mapping_id: int | None
    tag: str | None
    op: str | None
    outcome: str
    detail: str
    attempts: int
    job_id: str | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = _iso(self.at)
        return out


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat().replace("+00:00", "Z")


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _mapping(row: TagMapping) -> Mapping:
    return Mapping(
        id=row.id,
        klcode_tag=row.klcode_tag,
        ac_tag_id=row.ac_tag_id,
        ac_tag_name=row.ac_tag_name,
        direction=row.direction,
        active=bool(row.active),
        schedule=row.schedule,
        customer_count=row.customer_count,
        customer_count_at=_aware(row.customer_count_at),
        last_synced_at=_aware(row.last_synced_at),
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
        updated_at=_aware(row.updated_at),  # type: ignore[arg-type]
    )


def _entry(row: SyncLogEntry) -> LogEntry:
    return LogEntry(
        id=row.id,
        at=_aware(row.at),  # type: ignore[arg-type]
        source=row.source,
        event_id=row.event_id,
        email=row.email,
        mapping_id=row.mapping_id,
        tag=row.tag,
        op=row.op,
        outcome=row.outcome,
        detail=row.detail,
        attempts=row.attempts,
        job_id=row.job_id,
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the web process read while workers write; busy_timeout queues writers instead of
    # failing them with "database is locked".
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _validate(fields: dict[str, Any]) -> None:
    if "direction" in fields and fields["direction"] not in DIRECTIONS:
        raise InvalidMapping("direction", f"must be one of {', '.join(DIRECTIONS)}")
    if "schedule" in fields and fields["schedule"] not in SCHEDULES:
        raise InvalidMapping("schedule", f"must be one of {', '.join(SCHEDULES)}")
    for name in ("klcode_tag", "ac_tag_name"):
        if name in fields and not str(fields[name]).strip():
            raise InvalidMapping(name, "must not be empty")
    if "ac_tag_id" in fields and (
        not isinstance(fields["ac_tag_id"], int) or fields["ac_tag_id"] <= 0
    ):
        raise InvalidMapping("ac_tag_id", "must be a positive integer")


class Store:
    """Tag mappings and the sync log, on any SQLAlchemy URL (SQLite by default)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- schema ---------------------------------------------------------------------------

    def init_schema(self) -> None:
        """Create or migrate the schema; safe when several processes start at once."""
        for attempt in range(5):
            try:
                self._init_schema_locked()
                return
            except (OperationalError, ProgrammingError, IntegrityError) as exc:
                # Another process won the race to CREATE TABLE between our check and our create.
                if attempt == 4:
                    raise
                log.info("schema init raced another process (%s); retrying", type(exc).__name__)
                time.sleep(0.2 * (attempt + 1))

    def _init_schema_locked(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
            elif conn.dialect.name == "sqlite":
                # Take SQLite's write lock now, so the check-then-create below is one unit.
                conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS tagsync_schema_lock (x INTEGER)")
            Base.metadata.create_all(conn)
            row = conn.execute(select(SchemaVersion).where(SchemaVersion.id == 1)).first()
            if row is None:
                conn.execute(SchemaVersion.__table__.insert().values(id=1, version=SCHEMA_VERSION))
            # Future migrations go here: `if version < 2: ...`, then bump the stored version.

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- mappings -------------------------------------------------------------------------

    def list_mappings(self) -> list[Mapping]:
        with self._session() as s:
            return [_mapping(r) for r in s.scalars(select(TagMapping).order_by(TagMapping.id))]

    def get_mapping(self, mapping_id: int) -> Mapping:
        with self._session() as s:
            row = s.get(TagMapping, mapping_id)
            if row is None:
                raise MappingNotFound(f"mapping {mapping_id} does not exist")
            return _mapping(row)

    def find_by_klcode_tag(self, name: str) -> Mapping | None:
        with self._session() as s:
            row = s.scalar(select(TagMapping).where(TagMapping.klcode_tag_key == tag_key(name)))
            return _mapping(row) if row else None

    def find_by_ac_tag_name(self, name: str) -> Mapping | None:
        """The mapping whose AC tag has this name; an exact spelling wins over a case variant."""
        with self._session() as s:
            rows = list(s.scalars(select(TagMapping).where(TagMapping.ac_tag_key == tag_key(name))))
        if not rows:
            return None
        exact = [r for r in rows if r.ac_tag_name.strip() == name.strip()]
        return _mapping((exact or rows)[0])

    def find_by_ac_tag_id(self, ac_tag_id: int) -> Mapping | None:
        with self._session() as s:
            row = s.scalar(select(TagMapping).where(TagMapping.ac_tag_id == ac_tag_id))
            return _mapping(row) if row else None

    def create_mapping(
        self,
        *,
        klcode_tag: str,
        ac_tag_id: int,
        ac_tag_name: str,
        direction: str = "bidirectional",
        active: bool = True,
        schedule: str = "off",
    ) -> Mapping:
        """Add a mapping.

        Raises:
            DuplicateMapping: the KlCode tag or the AC tag id is already mapped.
            InvalidMapping: a field is out of range.
        """
        fields = {
            "klcode_tag": klcode_tag.strip(),
            "ac_tag_id": ac_tag_id,
            "ac_tag_name": ac_tag_name.strip(),
            "direction": direction,
            "active": active,
            "schedule": schedule,
        }
        _validate(fields)
        with self._session() as s:
            self._check_unique(s, fields, exclude_id=None)
            row = TagMapping(
                **fields,
                klcode_tag_key=tag_key(fields["klcode_tag"]),
                ac_tag_key=tag_key(fields["ac_tag_name"]),
            )
            s.add(row)
            self._commit_unique(s, fields)
            return _mapping(row)

    def update_mapping(self, mapping_id: int, **fields: Any) -> Mapping:
        """Change any of a mapping's fields.

        Raises:
            MappingNotFound, DuplicateMapping, InvalidMapping.
        """
        allowed = {"klcode_tag", "ac_tag_id", "ac_tag_name", "direction", "active", "schedule"}
        unknown = set(fields) - allowed - {"customer_count", "customer_count_at", "last_synced_at"}
        if unknown:
            raise InvalidMapping(sorted(unknown)[0], "unknown field")
        for name in ("klcode_tag", "ac_tag_name"):
            if name in fields:
                fields[name] = str(fields[name]).strip()
        _validate(fields)
        with self._session() as s:
            row = s.get(TagMapping, mapping_id)
            if row is None:
                raise MappingNotFound(f"mapping {mapping_id} does not exist")
            self._check_unique(s, fields, exclude_id=mapping_id)
            for name, value in fields.items():
                setattr(row, name, value)
            if "klcode_tag" in fields:
                row.klcode_tag_key = tag_key(fields["klcode_tag"])
            if "ac_tag_name" in fields:
                row.ac_tag_key = tag_key(fields["ac_tag_name"])
            row.updated_at = utcnow()
            self._commit_unique(s, fields)
            return _mapping(row)

    def delete_mapping(self, mapping_id: int) -> None:
        """Remove a mapping. Tags already applied stay in both systems."""
        with self._session() as s:
            row = s.get(TagMapping, mapping_id)
            if row is None:
                raise MappingNotFound(f"mapping {mapping_id} does not exist")
            s.delete(row)
            s.commit()

    def record_counts(self, mapping_id: int, *, customer_count: int, synced: bool = False) -> None:
        """Store a fresh customer count (and, after a reconciliation, when it ran)."""
        with self._session() as s:
            row = s.get(TagMapping, mapping_id)
            if row is None:
                return  # deleted meanwhile; nothing to remember
            row.customer_count = customer_count
            row.customer_count_at = utcnow()
            if synced:
                row.last_synced_at = row.customer_count_at
            s.commit()

    @staticmethod
    def _check_unique(s: Session, fields: dict[str, Any], exclude_id: int | None) -> None:
        checks = []
        if "klcode_tag" in fields:
            checks.append(
                (
                    "klcode_tag",
                    fields["klcode_tag"],
                    TagMapping.klcode_tag_key == tag_key(fields["klcode_tag"]),
                )
            )
        if "ac_tag_id" in fields:
            checks.append(
                ("ac_tag_id", fields["ac_tag_id"], TagMapping.ac_tag_id == fields["ac_tag_id"])
            )
        for name, value, clause in checks:
            q = select(TagMapping.id).where(clause)
            if exclude_id is not None:
                q = q.where(TagMapping.id != exclude_id)
            if s.scalar(q) is not None:
                raise DuplicateMapping(name, value)

    @staticmethod
    def _commit_unique(s: Session, fields: dict[str, Any]) -> None:
        try:
            s.commit()
        except IntegrityError as exc:  # a concurrent create slipped between check and commit
            s.rollback()
            field = "ac_tag_id" if "ac_tag_id" in str(exc.orig) else "klcode_tag"
            raise DuplicateMapping(field, fields.get(field)) from exc

    # -- sync log -------------------------------------------------------------------------

    def record_outcome(
        self,
        *,
        source: str,
        outcome: str,
        event_id: str | None = None,
        email: str | None = None,
        mapping_id: int | None = None,
        tag: str | None = None,
        op: str | None = None,
        detail: str = "",
        attempts: int = 1,
        job_id: str | None = None,
    ) -> None:
        """Write the outcome of one event; a retry of the same event updates its entry in place."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        values = {
            "at": utcnow(),
            "source": source,
            "email": email_key(email) if email else None,
            "mapping_id": mapping_id,
            "tag": tag,
            "op": op,
            "outcome": outcome,
            "detail": detail[:2000],
            "attempts": attempts,
            "job_id": job_id,
        }
        for _ in range(3):
            with self._session() as s:
                row = None
                if event_id is not None:
                    row = s.scalar(select(SyncLogEntry).where(SyncLogEntry.event_id == event_id))
                if row is None:
                    s.add(SyncLogEntry(event_id=event_id, **values))
                else:
                    for name, value in values.items():
                        setattr(row, name, value)
                try:
                    s.commit()
                    return
                except IntegrityError:  # the same event recorded by a racing attempt: update it
                    s.rollback()
        raise StoreError(f"could not record outcome for {event_id}")

    def record_many(self, entries: list[dict[str, Any]]) -> None:
        """Insert many new entries in one transaction (a reconciliation's per-customer changes)."""
        if not entries:
            return
        now = utcnow()
        rows = []
        for e in entries:
            if e["outcome"] not in OUTCOMES:
                raise ValueError(f"unknown outcome {e['outcome']!r}")
            rows.append(
                {
                    "at": now,
                    "attempts": 1,
                    "detail": "",
                    **e,
                    "email": email_key(e["email"]) if e.get("email") else None,
                }
            )
        with self._session() as s:
            s.execute(SyncLogEntry.__table__.insert(), rows)
            s.commit()

    def sync_log(
        self,
        *,
        email: str | None = None,
        mapping_id: int | None = None,
        outcome: str | None = None,
        event_id: str | None = None,
        limit: int = DEFAULT_LOG_LIMIT,
        before: int | None = None,
    ) -> list[LogEntry]:
        """Entries newest first; `before` is an entry id, for paging."""
        q = select(SyncLogEntry).order_by(SyncLogEntry.id.desc())
        if email:
            q = q.where(SyncLogEntry.email == email_key(email))
        if mapping_id is not None:
            q = q.where(SyncLogEntry.mapping_id == mapping_id)
        if outcome:
            q = q.where(SyncLogEntry.outcome == outcome)
        if event_id:
            q = q.where(SyncLogEntry.event_id == event_id)
        if before is not None:
            q = q.where(SyncLogEntry.id < before)
        q = q.limit(max(1, min(limit, MAX_LOG_LIMIT)))
        with self._session() as s:
            return [_entry(r) for r in s.scalars(q)]

    def outcome_counts(self) -> dict[str, int]:
        with self._session() as s:
            rows = s.execute(
                select(SyncLogEntry.outcome, func.count()).group_by(SyncLogEntry.outcome)
            )
            return {outcome: count for outcome, count in rows}
