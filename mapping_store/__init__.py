"""Tag mappings and the sync log. Knows nothing of Flask or RQ."""

from .models import DIRECTIONS, OUTCOMES, SCHEDULES, email_key, tag_key
from .store import (
    DuplicateMapping,
    InvalidMapping,
    LogEntry,
    Mapping,
    MappingNotFound,
    Store,
    StoreError,
)

__all__ = [
    "DIRECTIONS",
    "OUTCOMES",
    "SCHEDULES",
    "DuplicateMapping",
    "InvalidMapping",
    "LogEntry",
    "Mapping",
    "MappingNotFound",
    "Store",
    "StoreError",
    "email_key",
    "tag_key",
]
