"""Retry policies, in two bounded layers (STYLE.md #7).

Layer 1, inside a job: every HTTP call is tried HTTP_ATTEMPTS times on transient errors,
waiting Retry-After when the server names it, else exponential backoff with jitter.
Layer 2, across jobs: RQ re-runs a failed job after each of TAGSYNC_RETRY_INTERVALS (default
20 s, 90 s, 6 min; needs a worker started with the scheduler). Worst case per call:
3 x (1 + 3) = 12 attempts over ~8 minutes, then the job lands in RQ's failed registry,
replayable with `tagsync failed replay`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from .errors import TransientError

HTTP_ATTEMPTS = 3
MAX_RETRY_AFTER = 30.0  # seconds we wait inside a job; longer outages go to RQ's delayed retry

_backoff = wait_exponential(multiplier=0.5, max=8) + wait_random(0, 0.5)

F = TypeVar("F", bound=Callable[..., Any])


def wait_retry_after(state: RetryCallState) -> float:
    """Honour the server's Retry-After when it gave one, else back off exponentially."""
    exc = state.outcome.exception() if state.outcome else None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER)
    return _backoff(state)


def transient_retry(attempts: int = HTTP_ATTEMPTS) -> Callable[[F], F]:
    """Decorator: retry only TransientError, a bounded number of times, re-raising the last."""
    return retry(  # type: ignore[return-value]
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(attempts),
        wait=wait_retry_after,
        reraise=True,
    )
