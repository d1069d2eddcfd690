"""SQLAlchemy models: tag mappings and the sync log. Portable types only (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Boolean, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DIRECTIONS = ("klcode_to_ac", "ac_to_klcode", "bidirectional")
SCHEDULES = ("off", "hourly", "daily")
OUTCOMES = (
    "applied",
    "already_in_sync",
    "echo",
    "stale",
    "no_mapping",
    "inactive",
    "direction",
    "contact_not_found",
    "failed",
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def tag_key(name: str) -> str:
    """Lookup key for a tag name: people disagree on case and stray spaces, not letters."""
    return " ".join(name.split()).casefold()


def email_key(email: str) -> str:
    """Customers are matched by email, trimmed and case-insensitive (DESIGN.md section 1)."""
    return email.strip().lower()


class Base(DeclarativeBase):
    pass


class TagMapping(Base):
    __tablename__ = "tag_mappings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "VIP Customer"
    klcode_tag: Mapped[str] = mapped_column(String(255))
    # "vip customer": unique, so two spellings of one tag cannot be mapped twice
    klcode_tag_key: Mapped[str] = mapped_column(String(255), unique=True)
    # 64
    ac_tag_id: Mapped[int] = mapped_column(Integer, unique=True)
    # "VIP Customer" (as AC spells it; AC webhooks name the tag, never its id)
    ac_tag_name: Mapped[str] = mapped_column(String(255))
    # "vip customer"
    ac_tag_key: Mapped[str] = mapped_column(String(255), index=True)
    # "bidirectional"
    direction: Mapped[str] = mapped_column(String(16))
    # True
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # "off" | "hourly" | "daily"
    schedule: Mapped[str] = mapped_column(String(8), default="off")
    # 1234 (KlCode customers holding the tag), None until first counted
    customer_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    customer_count_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SyncLogEntry(Base):
    __tablename__ = "sync_log"
    __table_args__ = (Index("ix_sync_log_mapping_at", "mapping_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # "klcode" | "ac" | "reconcile"
    source: Mapped[str] = mapped_column(String(16))
    # "kl:evt_9f2c1a": one entry per event, updated in place across retries
    event_id: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    # "jane.doe@example.com"
    email: Mapped[str | None] = mapped_column(String(320), nullable=True, index=True)
    # 3 (no foreign key: deleting a mapping keeps its history)
    mapping_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # "VIP Customer", as the event named it
    tag: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # "add" | "remove"
    op: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # one of OUTCOMES
    outcome: Mapped[str] = mapped_column(String(24), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class SchemaVersion(Base):
    __tablename__ = "tagsync_schema"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
