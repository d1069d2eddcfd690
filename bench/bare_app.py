"""The baseline: a bare Flask endpoint that parses the body and answers 202, enqueueing nothing.

Served by the same gunicorn configuration as tagsync, it is what "free" looks like on this
machine; the receiver's throughput is reported as a ratio to it.
"""

from __future__ import annotations

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/klcode")
    def klcode() -> tuple[object, int]:
        body = request.get_json(force=True)
        n = len(body["events"]) if isinstance(body, dict) and "events" in body else 1
        return jsonify({"status": "queued", "events": n}), 202

    @app.post("/webhooks/activecampaign/<token>")
    def ac(token: str) -> tuple[object, int]:
        form = request.form.to_dict()
        return jsonify({"status": "queued", "events": 1 if form.get("type") else 0}), 202

    return app


def create_unqueued_app() -> Flask:
    """tagsync's own receiver with the Redis write replaced by nothing: everything else (HMAC,
    marshmallow, the app's middleware) is real. Against it, the ratio isolates what making the
    events durable costs, comparable to PLATFORM.md's 0.36 for one `Queue.enqueue` per request."""
    from webhooks import create_app as create_tagsync  # noqa: PLC0415 - only this baseline

    app = create_tagsync()
    events = app.extensions["tagsync"].events
    events.push = lambda batch, *, source: None
    events.push_raw = lambda body, count, *, received_at: None
    return app
