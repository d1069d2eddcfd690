"""A KlCode stand-in: the REST API of DESIGN.md section 8 and signed tag webhooks (section 4).

Every tag change, through the API or the sandbox admin, emits a signed `customer.tag_added` /
`customer.tag_removed` webhook, so our own writes echo back as they do in production.
Failed deliveries are retried a few times with backoff.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from flask import Flask, Response, jsonify, request

from webhooks.signatures import sign

from .common import Faults, Outbox, Stats, add_controls, admin_page, fault_response, tag_answer


@dataclass
class KlCodeState:
    api_key: str = "sandbox-klcode-key"
    webhook_url: str | None = None
    webhook_secret: str = "sandbox-klcode-secret"
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    catalogue: set[str] = field(default_factory=set)
    stats: Stats = field(default_factory=Stats)
    lock: threading.RLock = field(default_factory=threading.RLock)
    faults: Faults = field(default_factory=Faults)
    outbox: Outbox | None = None
    _seq: int = 1000

    def add_customer(self, email: str, tags: tuple[str, ...] = ()) -> int:
        with self.lock:
            existing = self.customer_by_email(email)
            if existing is not None:
                return existing
            self._seq += 1
            self.customers[self._seq] = {
                "id": self._seq,
                "email": email.strip().lower(),
                "tags": set(tags),
            }
            self.catalogue.update(tags)
            return self._seq

    def customer_by_email(self, email: str) -> int | None:
        wanted = email.strip().lower()
        for cid, c in self.customers.items():
            if c["email"] == wanted:
                return cid
        return None

    def tags_of(self, email: str) -> set[str]:
        with self.lock:
            cid = self.customer_by_email(email)
            return set(self.customers[cid]["tags"]) if cid is not None else set()

    def set_tag(self, cid: int, tag: str, op: str) -> bool:
        """Change a customer's tag as KlCode would; emits a webhook when something changed."""
        with self.lock:
            tags = self.customers[cid]["tags"]
            if (tag in tags) == (op == "add"):
                return False
            (tags.add if op == "add" else tags.discard)(tag)
            self.catalogue.add(tag)
            self.stats.note_write("tag_added" if op == "add" else "tag_removed")
            event = {
                "id": f"evt_{uuid.uuid4().hex[:16]}",
                "type": "customer.tag_added" if op == "add" else "customer.tag_removed",
                "occurred_at": datetime.now(timezone.utc)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "customer": {"id": cid, "email": self.customers[cid]["email"]},
                "tag": {"name": tag},
            }
        self.emit(event)
        return True

    def emit(self, event: dict[str, Any]) -> None:
        if self.outbox is None or not self.webhook_url:
            return
        body = json.dumps(event).encode()

        def build() -> tuple[str, dict[str, Any]]:
            # Signed at send time, as a real sender does on each (re)delivery.
            headers = {
                "Content-Type": "application/json",
                "X-KlCode-Signature": sign(self.webhook_secret, body),
            }
            return str(self.webhook_url), {"data": body, "headers": headers}

        self.outbox.send(build)


def create_klcode_app(state: KlCodeState) -> Flask:
    app = Flask("sandbox.klcode")

    @app.before_request
    def gate() -> Any:
        if not request.path.startswith("/api/v1/"):
            return None
        rule = request.url_rule.rule if request.url_rule else request.path
        state.stats.note_request(f"{request.method} {rule}")
        if request.headers.get("Authorization") != f"Bearer {state.api_key}":
            return jsonify({"error": "unauthorized"}), 401
        if state.faults.delay:
            time.sleep(state.faults.delay)
        with state.lock:
            injected = state.faults.injected()
        if injected:
            return fault_response(*injected, {"error": "unavailable"})
        return None

    def customer_json(cid: int) -> dict[str, Any]:
        c = state.customers[cid]
        return {"id": cid, "email": c["email"], "tags": sorted(c["tags"])}

    @app.get("/api/v1/customers")
    def customers() -> Response:
        email = request.args.get("email", "")
        with state.lock:
            cid = state.customer_by_email(email)
            rows = [customer_json(cid)] if cid is not None else []
        return jsonify({"customers": rows})

    @app.post("/api/v1/customers/<int:cid>/tags")
    def add_tag(cid: int) -> Any:
        tag = str((request.get_json(silent=True) or {}).get("tag", "")).strip()
        if not tag:
            return jsonify({"error": "tag is required"}), 422
        if cid not in state.customers:
            return jsonify({"error": "customer not found"}), 404
        created = state.set_tag(cid, tag, "add")
        return jsonify({"customer": customer_json(cid)}), 201 if created else 200

    @app.delete("/api/v1/customers/<int:cid>/tags/<path:tag>")
    def remove_tag(cid: int, tag: str) -> Any:
        if cid not in state.customers or not state.set_tag(cid, unquote(tag), "remove"):
            return jsonify({"error": "tag not present"}), 404
        return "", 204

    @app.get("/api/v1/tags")
    def tags() -> Response:
        with state.lock:
            rows = [
                {
                    "name": t,
                    "customer_count": sum(1 for c in state.customers.values() if t in c["tags"]),
                }
                for t in sorted(state.catalogue)
            ]
        return jsonify({"tags": rows})

    @app.get("/api/v1/tags/<path:tag>/customers")
    def tag_customers(tag: str) -> Response:
        name = unquote(tag)
        page = max(int(request.args.get("page", 1)), 1)
        per_page = min(max(int(request.args.get("per_page", 500)), 1), 1000)
        with state.lock:
            rows = [
                {"id": cid, "email": c["email"]}
                for cid, c in sorted(state.customers.items())
                if name in c["tags"]
            ]
        chunk = rows[(page - 1) * per_page : page * per_page]
        return jsonify({"customers": chunk, "page": page, "per_page": per_page, "total": len(rows)})

    # -- sandbox controls -----------------------------------------------------------------

    add_controls(app, state, api_prefix="/api/v1/")

    @app.post("/_sandbox/tag")
    def admin_tag() -> Any:
        """Tag or untag a customer as a KlCode admin would."""
        body = request.get_json(silent=True) or request.form.to_dict()
        cid = state.customer_by_email(body.get("email", ""))
        if cid is None:
            return jsonify({"error": "no such customer"}), 404
        changed = state.set_tag(cid, str(body.get("tag", "")), body.get("op", "add"))
        return tag_answer(changed, sorted(state.customers[cid]["tags"]))

    @app.get("/")
    def admin() -> str:
        with state.lock:
            rows = [(c["email"], sorted(c["tags"])) for c in state.customers.values()]
            tags = sorted(state.catalogue)
        return admin_page("KlCode stand-in (sandbox)", sorted(rows), tags)

    @app.get("/_sandbox/customers/<path:email>")
    def customer_state(email: str) -> Any:
        cid = state.customer_by_email(email)
        if cid is None:
            return jsonify({"error": "no such customer"}), 404
        return jsonify(customer_json(cid))

    return app
