"""One error hierarchy for both external systems, split by what a retry can fix.

`except TransientError` catches a timeout from either system; `except ACError` catches every AC
failure. Each error carries a short `reason` slug for logs and the sync log.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base of every error raised while talking to KlCode or AC."""

    reason = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        if reason:
            self.reason = reason


class TransientError(SyncError):
    """Timeouts, connection errors, 429 and 5xx: worth retrying later."""

    reason = "transient"


class PermanentError(SyncError):
    """Other 4xx and malformed answers: a retry would fail the same way."""

    reason = "permanent"


class ContactNotFound(SyncError):
    """The customer has no match by email on the target side (yet)."""

    reason = "contact_not_found"


class ACError(SyncError):
    pass


class ACTransientError(ACError, TransientError):
    pass


class ACPermanentError(ACError, PermanentError):
    pass


class KlCodeError(SyncError):
    pass


class KlCodeTransientError(KlCodeError, TransientError):
    pass


class KlCodePermanentError(KlCodeError, PermanentError):
    pass


class LockTimeout(TransientError):
    """Another worker held the per-customer lock for too long."""

    reason = "lock_timeout"


class NotConfigured(PermanentError):
    reason = "not_configured"
