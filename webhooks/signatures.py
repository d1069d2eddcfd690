"""KlCode webhook signatures: `X-KlCode-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`.

<hex> is HMAC-SHA256 over `<t>.<raw body>` with KLCODE_WEBHOOK_SECRET. Several v1 entries
appear while KlCode rotates its secret; any match passes. Compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TOLERANCE = 300  # seconds between the signature's t and our clock, either way
HEADER = "X-KlCode-Signature"


class SignatureError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def compute(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)  # not `prefix + body`: no copy of a body up to 1 MiB
    return mac.hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value KlCode would send (used by the sandbox and tests)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={compute(secret, t, body)}"


def verify(
    header: str | None,
    body: bytes,
    secret: str,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE,
) -> None:
    """Accept or raise.

    Raises:
        SignatureError: missing or malformed header, stale timestamp, or no matching v1.
    """
    if not header:
        raise SignatureError("missing_signature", f"missing {HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("malformed_signature", "t is not a unix timestamp") from None
        elif key == "v1":
            candidates.append(value.strip())
    if timestamp is None or not candidates:
        raise SignatureError("malformed_signature", f"{HEADER} needs t= and at least one v1=")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("expired_signature", f"timestamp is more than {tolerance} s from now")
    expected = compute(secret, timestamp, body)
    # Compare against every candidate, without stopping early, in constant time each.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("invalid_signature", "signature does not match the body")
