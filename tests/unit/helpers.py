"""Helpers shared by the unit tests of the receiver."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from webhooks import signatures


def post_klcode(
    client: FlaskClient,
    body: object,
    *,
    secret: str,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Any:
    """POST to the KlCode receiver, signed as KlCode signs (`raw` bytes instead of `body`)."""
    data = raw if raw is not None else json.dumps(body).encode()
    return client.post(
        "/webhooks/klcode",
        data=data,
        content_type=content_type,
        headers={"X-KlCode-Signature": signatures.sign(secret, data)},
    )
