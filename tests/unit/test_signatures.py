from __future__ import annotations

import pytest

from webhooks import signatures

BODY = b'{"id":"evt_1"}'


def test_valid_signature_passes() -> None:
    header = signatures.sign("s3cret", BODY, timestamp=1_700_000_000)
    signatures.verify(header, BODY, "s3cret", now=1_700_000_100)


@pytest.mark.parametrize(
    ("header", "body", "now", "reason"),
    [
        (None, BODY, 1_700_000_000, "missing_signature"),
        ("", BODY, 1_700_000_000, "missing_signature"),
        ("v1=abc", BODY, 1_700_000_000, "malformed_signature"),
        ("t=abc,v1=abc", BODY, 1_700_000_000, "malformed_signature"),
        ("t=1700000000", BODY, 1_700_000_000, "malformed_signature"),
        (
            signatures.sign("s3cret", BODY, 1_700_000_000),
            BODY + b" ",
            1_700_000_000,
            "invalid_signature",
        ),
        (signatures.sign("other", BODY, 1_700_000_000), BODY, 1_700_000_000, "invalid_signature"),
        (signatures.sign("s3cret", BODY, 1_700_000_000), BODY, 1_700_000_301, "expired_signature"),
        (signatures.sign("s3cret", BODY, 1_700_000_400), BODY, 1_700_000_000, "expired_signature"),
    ],
)
def test_bad_signatures_are_rejected(
    header: str | None, body: bytes, now: int, reason: str
) -> None:
    with pytest.raises(signatures.SignatureError) as exc:
        signatures.verify(header, body, "s3cret", now=now)
    assert exc.value.reason == reason


def test_timestamp_is_part_of_the_signed_bytes() -> None:
    good = signatures.compute("s3cret", 1_700_000_000, BODY)
    with pytest.raises(signatures.SignatureError):
        signatures.verify(f"t=1700000001,v1={good}", BODY, "s3cret", now=1_700_000_000)


def test_rotation_any_v1_matches() -> None:
    t = 1_700_000_000
    old, new = signatures.compute("old", t, BODY), signatures.compute("new", t, BODY)
    header = f"t={t},v1={old},v1={new}"
    signatures.verify(header, BODY, "new", now=t)
    signatures.verify(header, BODY, "old", now=t)
    with pytest.raises(signatures.SignatureError):
        signatures.verify(header, BODY, "neither", now=t)
