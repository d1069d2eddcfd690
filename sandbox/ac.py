"""An ActiveCampaign API v3 stand-in, faithful to shared/activecampaign.md.

Api-Token auth (403 without), singular/plural envelopes, ids and totals as strings, limit/offset
paging (max 100), contactTags without `meta`, 201 new / 200 already-present on POST /contactTags,
404 shapes of both kinds, 5 requests/s per account answered with 429 + Retry-After, and
contact_tag_added/removed webhooks: form-encoded, sent asynchronously, never retried, stamped
with second resolution and the account's UTC offset, `initiated_from=api` for API changes.
Bulk imports add tags by name and fire no webhooks.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Flask, Response, jsonify, request

from .common import Faults, Outbox, Stats, add_controls, admin_page, fault_response, tag_answer

PAGE_MAX = 100
DEFAULT_RATE = 5  # requests per second per account, as AC enforces


def _now_iso(offset_hours: int) -> str:
    tz = timezone(timedelta(hours=offset_hours))
    return datetime.now(tz).replace(microsecond=0).isoformat()


@dataclass
class ACState:
    api_token: str = "sandbox-ac-token"
    rate_limit: float | None = DEFAULT_RATE
    offset_hours: int = -6  # the account's time zone, as AC stamps date_time
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    tags: dict[int, dict[str, Any]] = field(default_factory=dict)
    contact_tags: dict[int, dict[str, Any]] = field(default_factory=dict)
    webhooks: dict[int, dict[str, Any]] = field(default_factory=dict)
    imports: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _seq: int = 100
    _window: deque = field(default_factory=deque)

    def next_id(self) -> int:
        self._seq += 1
        return self._seq

    # -- model helpers (used by the API, the admin page and tests) ------------------------

    def add_contact(self, email: str, first: str = "", last: str = "") -> int:
        with self.lock:
            existing = self.contact_by_email(email)
            if existing:
                return existing
            cid = self.next_id()
            now = _now_iso(self.offset_hours)
            self.contacts[cid] = {
                "id": cid,
                "email": email.strip(),
                "firstName": first,
                "lastName": last,
                "phone": "",
                "cdate": now,
                "udate": now,
                "deleted": "0",
                "updated": time.time(),
            }
            return cid

    def contact_by_email(self, email: str) -> int | None:
        wanted = email.strip().lower()
        for cid, c in self.contacts.items():
            if c["email"].lower() == wanted:
                return cid
        return None

    def add_tag(self, name: str, description: str = "") -> int:
        with self.lock:
            for tid, t in self.tags.items():
                if t["tag"] == name:
                    return tid
            tid = self.next_id()
            self.tags[tid] = {
                "id": tid,
                "tag": name,
                "tagType": "contact",
                "description": description,
                "cdate": _now_iso(self.offset_hours),
            }
            return tid

    def tag_by_name(self, name: str) -> int | None:
        for tid, t in self.tags.items():
            if t["tag"] == name:
                return tid
        return None

    def contact_tag(self, contact_id: int, tag_id: int) -> int | None:
        for ctid, ct in self.contact_tags.items():
            if ct["contact"] == contact_id and ct["tag"] == tag_id:
                return ctid
        return None

    def tags_of(self, email: str) -> set[str]:
        with self.lock:
            cid = self.contact_by_email(email)
            if cid is None:
                return set()
            return {
                self.tags[ct["tag"]]["tag"]
                for ct in self.contact_tags.values()
                if ct["contact"] == cid
            }

    def tag_contact(
        self, contact_id: int, tag_id: int, *, source: str, notify: bool = True
    ) -> tuple[int, bool]:
        with self.lock:
            existing = self.contact_tag(contact_id, tag_id)
            if existing is not None:
                return existing, False
            ctid = self.next_id()
            self.contact_tags[ctid] = {
                "id": ctid,
                "contact": contact_id,
                "tag": tag_id,
                "cdate": _now_iso(self.offset_hours),
            }
            self.contacts[contact_id]["updated"] = time.time()
            self.stats.note_write("tag_added")
        if notify:
            self._fire("contact_tag_added", contact_id, tag_id, source)
        return ctid, True

    def untag_contact_tag(self, ctid: int, *, source: str, notify: bool = True) -> bool:
        with self.lock:
            ct = self.contact_tags.pop(ctid, None)
            if ct is None:
                return False
            self.contacts[ct["contact"]]["updated"] = time.time()
            self.stats.note_write("tag_removed")
        if notify:
            self._fire("contact_tag_removed", ct["contact"], ct["tag"], source)
        return True

    # -- webhooks -------------------------------------------------------------------------

    outbox: Outbox | None = None

    def _fire(self, event: str, contact_id: int, tag_id: int, source: str) -> None:
        if self.outbox is None:
            return
        with self.lock:
            contact = dict(self.contacts[contact_id])
            tag = self.tags[tag_id]["tag"]
            names = sorted(
                self.tags[ct["tag"]]["tag"]
                for ct in self.contact_tags.values()
                if ct["contact"] == contact_id
            )
            hooks = [
                dict(h)
                for h in self.webhooks.values()
                if event in h["events"] and source in h["sources"]
            ]
        stamp = _now_iso(self.offset_hours)
        for hook in hooks:
            form = {
                "type": event,
                "date_time": stamp,
                "initiated_from": source,
                "initiated_by": source,
                "list": "0",
                "contact[id]": str(contact_id),
                "contact[email]": contact["email"],
                "contact[first_name]": contact["firstName"],
                "contact[last_name]": contact["lastName"],
                "contact[phone]": "",
                "contact[ip]": "0.0.0.0",
                "contact[tags]": ", ".join(names),
                "contact[customer_acct_name]": "",
                "contact[orgname]": "",
                "customer_acct_name": "",
                "customer_acct_id": "0",
                "orgname": "",
                "tag": tag,
            }
            url = hook["url"]
            self.outbox.send(lambda url=url, form=form: (url, {"data": form}))


def create_ac_app(state: ACState) -> Flask:
    app = Flask("sandbox.ac")

    def err404(message: str) -> tuple[Response, int]:
        return jsonify({"message": message}), 404

    @app.before_request
    def gate() -> Any:
        if not request.path.startswith("/api/3/"):
            return None
        state.stats.note_request(
            f"{request.method} {request.url_rule.rule if request.url_rule else request.path}"
        )
        f = state.faults
        if f.delay:
            time.sleep(f.delay)
        if request.headers.get("Api-Token") != state.api_token:
            return jsonify({"message": "No Result found for User with id 0"}), 403
        with state.lock:
            if state.rate_limit:
                now = time.monotonic()
                while state._window and now - state._window[0] >= 1.0:
                    state._window.popleft()
                if len(state._window) >= state.rate_limit:
                    resp = jsonify({"message": "Rate limit exceeded"})
                    resp.headers["Retry-After"] = "1"
                    resp.headers["RateLimit-Limit"] = str(int(state.rate_limit))
                    resp.headers["RateLimit-Remaining"] = "0"
                    return resp, 429
                state._window.append(now)
            injected = f.injected()
        if injected:
            return fault_response(*injected, {"message": "Service Unavailable"})
        return None

    def page() -> tuple[int, int]:
        try:
            limit = min(int(request.args.get("limit", 20)), PAGE_MAX)
            offset = max(int(request.args.get("offset", 0)), 0)
        except ValueError:
            return 20, 0
        return limit, offset

    def contact_json(c: dict[str, Any]) -> dict[str, Any]:
        return {k: (str(v) if k == "id" else v) for k, v in c.items() if k != "updated"}

    @app.get("/api/3/contacts")
    def list_contacts() -> Response:
        limit, offset = page()
        with state.lock:
            rows = sorted(state.contacts.values(), key=lambda c: c["id"])
            if "email" in request.args:
                wanted = request.args["email"].strip().lower()
                rows = [c for c in rows if c["email"].lower() == wanted]
            if "tagid" in request.args:
                tid = int(request.args["tagid"])
                holders = {ct["contact"] for ct in state.contact_tags.values() if ct["tag"] == tid}
                rows = [c for c in rows if c["id"] in holders]
            if "id_greater" in request.args:
                floor = int(request.args["id_greater"])
                rows = [c for c in rows if c["id"] > floor]
            if "filters[updated_after]" in request.args:
                since = datetime.fromisoformat(request.args["filters[updated_after]"]).timestamp()
                rows = [c for c in rows if c["updated"] > since]
            chunk = [contact_json(c) for c in rows[offset : offset + limit]]
        return jsonify(
            {
                "scoreValues": [],
                "contacts": chunk,
                "meta": {"total": str(len(rows)), "page_input": dict(request.args)},
            }
        )

    @app.post("/api/3/contact/sync")
    def contact_sync() -> tuple[Response, int]:
        body = (request.get_json(silent=True) or {}).get("contact") or {}
        email = str(body.get("email", "")).strip()
        if not email:
            return jsonify(
                {
                    "errors": [
                        {
                            "title": "Missing attribute",
                            "code": "field_missing",
                            "source": {"pointer": "/data/attributes/email"},
                        }
                    ]
                }
            ), 422
        existed = state.contact_by_email(email) is not None
        cid = state.add_contact(email, body.get("firstName", ""), body.get("lastName", ""))
        return jsonify(
            {"contact": contact_json(state.contacts[cid]), "fieldValues": []}
        ), 200 if existed else 201

    @app.get("/api/3/contacts/<int:cid>/contactTags")
    def contact_tags_of(cid: int) -> Any:
        with state.lock:
            if cid not in state.contacts:
                return err404(f"No Result found for Subscriber with id {cid}")
            rows = [
                {
                    "contact": str(ct["contact"]),
                    "tag": str(ct["tag"]),
                    "cdate": ct["cdate"],
                    "id": str(ct["id"]),
                }
                for ct in state.contact_tags.values()
                if ct["contact"] == cid
            ]
        return jsonify({"contactTags": rows})  # the real answer carries no meta

    @app.post("/api/3/contactTags")
    def create_contact_tag() -> Any:
        body = (request.get_json(silent=True) or {}).get("contactTag") or {}
        for name in ("contact", "tag"):
            if body.get(name) in (None, ""):
                return jsonify(
                    {
                        "errors": [
                            {
                                "status": 422,
                                "title": "Missing attribute",
                                "source": {"pointer": f"/data/attributes/{name}"},
                            }
                        ]
                    }
                ), 422
        try:
            cid, tid = int(body["contact"]), int(body["tag"])
        except (TypeError, ValueError):
            return jsonify(
                {"errors": [{"status": 422, "title": "Invalid attribute", "code": "field_invalid"}]}
            ), 422
        with state.lock:
            if cid not in state.contacts:
                return jsonify(
                    {
                        "errors": [
                            {"status": 404, "title": "Not Found", "detail": "Contact not found"}
                        ]
                    }
                ), 404
            if tid not in state.tags:
                return jsonify(
                    {"errors": [{"status": 404, "title": "Not Found", "detail": "Tag not found"}]}
                ), 404
        ctid, created = state.tag_contact(cid, tid, source="api")
        with state.lock:
            ct = state.contact_tags.get(ctid, {"cdate": ""})
            contact = contact_json(state.contacts[cid])
        return jsonify(
            {
                "contacts": [contact],
                "contactTag": {
                    "contact": str(cid),
                    "tag": str(tid),
                    "cdate": ct["cdate"],
                    "links": {},
                    "id": str(ctid),
                },
            }
        ), 201 if created else 200

    @app.delete("/api/3/contactTags/<int:ctid>")
    def delete_contact_tag(ctid: int) -> Any:
        if not state.untag_contact_tag(ctid, source="api"):
            return err404(f"No Result found for SubscriberTag with id {ctid}")
        return jsonify({})

    def tag_json(t: dict[str, Any], with_count: bool = True) -> dict[str, Any]:
        out = {**t, "id": str(t["id"])}
        if with_count:
            out["subscriber_count"] = str(
                sum(1 for ct in state.contact_tags.values() if ct["tag"] == t["id"])
            )
        return out

    @app.get("/api/3/tags")
    def list_tags() -> Response:
        limit, offset = page()
        with state.lock:
            rows = sorted(state.tags.values(), key=lambda t: t["id"])
            if "filters[search][eq]" in request.args:
                rows = [t for t in rows if t["tag"] == request.args["filters[search][eq]"]]
            elif "search" in request.args:
                needle = request.args["search"].lower()
                rows = [t for t in rows if needle in t["tag"].lower()]
            chunk = [tag_json(t) for t in rows[offset : offset + limit]]
        return jsonify({"tags": chunk, "meta": {"total": str(len(rows))}})

    @app.get("/api/3/tags/<int:tid>")
    def get_tag(tid: int) -> Any:
        with state.lock:
            if tid not in state.tags:
                return err404(f"No Result found for Tag with id {tid}")
            return jsonify({"tag": tag_json(state.tags[tid])})

    @app.post("/api/3/tags")
    def create_tag() -> Any:
        body = (request.get_json(silent=True) or {}).get("tag") or {}
        name = str(body.get("tag", "")).strip()
        if not name:
            return jsonify(
                {"errors": [{"title": "Missing attribute", "code": "field_missing"}]}
            ), 422
        tid = state.add_tag(name, str(body.get("description", "")))
        return jsonify({"tag": tag_json(state.tags[tid], with_count=False)}), 201

    @app.get("/api/3/webhooks")
    def list_webhooks() -> Response:
        with state.lock:
            rows = list(state.webhooks.values())
        if "filters[url]" in request.args:
            rows = [w for w in rows if w["url"] == request.args["filters[url]"]]
        return jsonify(
            {
                "webhooks": [{**w, "id": str(w["id"])} for w in rows],
                "meta": {"total": str(len(rows))},
            }
        )

    @app.post("/api/3/webhooks")
    def create_webhook() -> Any:
        body = (request.get_json(silent=True) or {}).get("webhook") or {}
        missing = [k for k in ("name", "url", "events", "sources") if not body.get(k)]
        if missing:
            return jsonify(
                {
                    "errors": [
                        {
                            "title": "Missing attribute",
                            "code": "field_missing",
                            "source": {"pointer": f"/data/attributes/{missing[0]}"},
                        }
                    ]
                }
            ), 422
        with state.lock:
            wid = state.next_id()
            state.webhooks[wid] = {
                "id": wid,
                "name": body["name"],
                "url": body["url"],
                "events": list(body["events"]),
                "sources": list(body["sources"]),
                "listid": "0",
                "cdate": _now_iso(state.offset_hours),
                "links": [],
            }
        return jsonify({"webhook": {**state.webhooks[wid], "id": str(wid)}}), 201

    @app.delete("/api/3/webhooks/<int:wid>")
    def delete_webhook(wid: int) -> Any:
        with state.lock:
            if state.webhooks.pop(wid, None) is None:
                return err404(f"No Result found for Webhook with id {wid}")
        return jsonify({})

    @app.post("/api/3/import/bulk_import")
    def bulk_import() -> Any:
        body = request.get_json(silent=True) or {}
        contacts = body.get("contacts")
        if not isinstance(contacts, list) or not contacts or len(contacts) > 250:
            return jsonify(
                {
                    "success": 0,
                    "message": "JSON payload did not pass validation.",
                    "failureReasons": ["contacts must hold 1 to 250 entries"],
                }
            ), 400
        failures = [
            {"contact": i, "failureReason": "email is required"}
            for i, c in enumerate(contacts)
            if not str((c or {}).get("email", "")).strip()
        ]
        if failures:
            return jsonify(
                {
                    "success": 0,
                    "message": "JSON payload did not pass validation.",
                    "failureReasons": failures,
                }
            ), 400
        batch = str(uuid.uuid4())
        ids = []
        for c in contacts:
            cid = state.add_contact(
                str(c["email"]), c.get("first_name", ""), c.get("last_name", "")
            )
            for name in c.get("tags") or []:
                state.tag_contact(
                    cid, state.add_tag(str(name)), source="system", notify=False
                )  # no webhooks
            ids.append(cid)
        with state.lock:
            state.imports[batch] = {"status": "completed", "success": ids, "failure": []}
        return jsonify(
            {
                "Success": 1,
                "queued_contacts": len(contacts),
                "batchId": batch,
                "message": "Contact import queued",
            }
        )

    @app.get("/api/3/import/info")
    def import_info() -> Any:
        info = state.imports.get(request.args.get("batchId", ""))
        if info is None:
            return err404("No Result found for Import")
        return jsonify(info)

    # -- sandbox controls (not part of AC's API) ------------------------------------------

    add_controls(app, state, api_prefix="/api/3/")

    @app.post("/_sandbox/tag")
    def admin_tag() -> Any:
        """Tag or untag a contact as a person in AC's UI would (initiated_from=admin)."""
        body = request.get_json(silent=True) or request.form.to_dict()
        email, tag, op = body.get("email", ""), body.get("tag", ""), body.get("op", "add")
        cid = state.contact_by_email(email)
        if cid is None:
            return jsonify({"error": "no such contact"}), 404
        tid = state.add_tag(tag)
        if op == "add":
            _, changed = state.tag_contact(cid, tid, source="admin")
        else:
            ctid = state.contact_tag(cid, tid)
            changed = ctid is not None and state.untag_contact_tag(ctid, source="admin")
        return tag_answer(changed, sorted(state.tags_of(email)))

    @app.get("/")
    def admin() -> str:
        with state.lock:
            rows = [
                (c["email"], sorted(state.tags_of(c["email"]))) for c in state.contacts.values()
            ]
            tags = sorted(t["tag"] for t in state.tags.values())
        return admin_page("ActiveCampaign stand-in (sandbox)", sorted(rows), tags)

    @app.get("/_sandbox/contacts/<path:email>")
    def contact_state(email: str) -> Any:
        cid = state.contact_by_email(email)
        if cid is None:
            return jsonify({"error": "no such contact"}), 404
        return jsonify({"id": cid, "email": email, "tags": sorted(state.tags_of(email))})

    return app
