"""The admin page: "Settings > Customer > Active Campaign Tags" (the seed document's screen).

Server-rendered, with a little JavaScript for sorting, confirmations and Sync Now progress.
Behind ADMIN_TOKEN (HTTP Basic in the browser) and CSRF tokens on every form.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer
from marshmallow import ValidationError
from rq import Queue
from rq.serializers import JSONSerializer

from mapping_store import (
    DIRECTIONS,
    OUTCOMES,
    SCHEDULES,
    DuplicateMapping,
    InvalidMapping,
    MappingNotFound,
)
from workers.errors import SyncError
from workers.mappings import ACUnavailable, UnknownACTag, create_mapping, update_mapping
from workers.metrics import Metrics
from workers.queueing import RECONCILE_QUEUE, enqueue_reconcile, queue_depths

from .api import MappingSchema, require_admin

bp = Blueprint("admin", __name__, template_folder="templates")
bp.before_request(require_admin)

CSRF_MAX_AGE = 12 * 3600  # seconds a form stays submittable
LOG_PAGE = 100


def _serializer() -> URLSafeTimedSerializer:
    key = hmac.new(
        current_app.config["ADMIN_TOKEN"].encode(), b"tagsync-csrf", hashlib.sha256
    ).hexdigest()
    return URLSafeTimedSerializer(key, salt="csrf")


def csrf_token() -> str:
    return str(_serializer().dumps("form"))


@bp.before_request
def check_csrf() -> None:
    if request.method == "POST":
        try:
            _serializer().loads(request.form.get("csrf_token", ""), max_age=CSRF_MAX_AGE)
        except BadSignature:
            abort(400, "missing or expired form token (CSRF); reload the page and try again")


@bp.app_context_processor
def inject() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "directions": DIRECTIONS,
        "schedules": SCHEDULES,
        "outcomes": OUTCOMES,
    }


def _ext() -> Any:
    return current_app.extensions["tagsync"]


def _klcode_tags() -> tuple[list[str], str | None]:
    """KlCode's tag catalogue for the dropdown, or an explanation why there is none."""
    kl = _ext().klcode
    if kl is None:
        return [], "KlCode is not configured: type the tag name"
    try:
        return sorted(name for name, _ in kl.list_tags()), None
    except SyncError as exc:
        return [], f"KlCode did not answer ({exc.reason}): type the tag name"


def _form_fields(partial: bool) -> dict[str, Any]:
    """The mapping form as API fields; an AC tag picked by name is resolved to its id."""
    f = request.form
    raw: dict[str, Any] = {}
    for name in ("klcode_tag", "ac_tag_id", "direction", "schedule"):
        if f.get(name, "").strip():
            raw[name] = f[name].strip()
    raw["active"] = f.get("active") == "on"
    if "ac_tag_id" not in raw and f.get("ac_tag_name", "").strip():
        if _ext().ac is None:
            raise ValidationError({"ac_tag_name": ["ActiveCampaign is not configured"]})
        try:
            tag = _ext().ac.find_tag(f["ac_tag_name"])
        except SyncError as exc:
            raise ACUnavailable(f"ActiveCampaign did not answer ({exc.reason})") from exc
        if tag is None:
            raise ValidationError(
                {"ac_tag_name": [f"no ActiveCampaign tag is named exactly {f['ac_tag_name']!r}"]}
            )
        raw["ac_tag_id"] = tag.id
    data = MappingSchema(partial=partial).load(raw)
    return {k: v for k, v in data.items() if k in raw}


def _form_error(exc: Exception) -> dict[str, list[str]]:
    if isinstance(exc, ValidationError):
        return {k: (v if isinstance(v, list) else [str(v)]) for k, v in exc.messages.items()}  # type: ignore[union-attr]
    if isinstance(exc, DuplicateMapping):
        return {exc.field: [f"already mapped: {exc.value}"]}
    if isinstance(exc, InvalidMapping):
        return {exc.field: [exc.message]}
    if isinstance(exc, UnknownACTag):
        return {"ac_tag_id": [str(exc)]}
    return {"_form": [str(exc)]}


FORM_ERRORS = (ValidationError, DuplicateMapping, InvalidMapping, UnknownACTag, ACUnavailable)


def _index_page(errors: dict[str, Any], form: Any) -> str:
    tags, tags_note = _klcode_tags()
    return render_template(
        "index.html",
        mappings=_ext().store.list_mappings(),
        klcode_tags=tags,
        tags_note=tags_note,
        errors=errors,
        form=form,
    )


@bp.get("/")
def index() -> str:
    """The mapping table and the Add New Mapping form."""
    return _index_page(errors={}, form={})


@bp.post("/mappings")
def add() -> Response | tuple[str, int]:
    """Add a mapping from the form."""
    try:
        m = create_mapping(_ext().store, _ext().ac, **_form_fields(partial=False))
    except FORM_ERRORS as exc:
        return _index_page(errors=_form_error(exc), form=request.form), 400
    flash(f"Added mapping {m.klcode_tag!r} ↔ AC tag {m.ac_tag_id} {m.ac_tag_name!r}.")
    return redirect(url_for("admin.index"), code=303)


def _mapping_or_404(mapping_id: int) -> Any:
    try:
        return _ext().store.get_mapping(mapping_id)
    except MappingNotFound:
        abort(404, f"mapping {mapping_id} does not exist")


@bp.get("/mappings/<int:mapping_id>/edit")
def edit(mapping_id: int) -> str:
    """The edit form of one mapping."""
    return render_template("edit.html", m=_mapping_or_404(mapping_id), errors={})


@bp.post("/mappings/<int:mapping_id>/edit")
def save(mapping_id: int) -> Response | tuple[str, int]:
    """Save the edit form."""
    try:
        m = update_mapping(_ext().store, _ext().ac, mapping_id, **_form_fields(partial=True))
    except MappingNotFound:
        abort(404, f"mapping {mapping_id} does not exist")
    except FORM_ERRORS as exc:
        return render_template(
            "edit.html", m=_ext().store.get_mapping(mapping_id), errors=_form_error(exc)
        ), 400
    flash(f"Saved mapping {m.klcode_tag!r}.")
    return redirect(url_for("admin.index"), code=303)


@bp.post("/mappings/<int:mapping_id>/delete")
def delete(mapping_id: int) -> Response:
    """Delete a mapping (tags already applied stay in both systems)."""
    m = _mapping_or_404(mapping_id)
    try:
        _ext().store.delete_mapping(mapping_id)
    except MappingNotFound:
        abort(404, f"mapping {mapping_id} does not exist")
    flash(f"Deleted mapping {m.klcode_tag!r}. Tags already applied stay in both systems.")
    return redirect(url_for("admin.index"), code=303)


@bp.post("/mappings/<int:mapping_id>/sync")
def sync(mapping_id: int) -> Response:
    """Sync Now (or its dry-run preview): queue it and show its progress."""
    _mapping_or_404(mapping_id)
    job = enqueue_reconcile(_ext().redis, mapping_id, dry_run=request.form.get("dry_run") == "1")
    if job is None:
        abort(409, "a reconciliation of this mapping is already queued")
    return redirect(url_for("admin.job", job_id=job.id), code=303)


@bp.post("/sync")
def sync_all() -> Response:
    """Sync Now for every active mapping."""
    n = 0
    for m in _ext().store.list_mappings():
        if m.active:
            enqueue_reconcile(_ext().redis, m.id)
            n += 1
    flash(f"Queued a reconciliation of {n} active mapping(s); see Health for progress.")
    return redirect(url_for("admin.index"), code=303)


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    """A Sync Now run: progress while it runs, the plan or the result when done."""
    return render_template("job.html", job_id=job_id)


@bp.get("/log")
def log() -> str:
    """The sync log, filtered by email, mapping and outcome."""
    args = request.args
    try:
        mapping_id = int(args["mapping_id"]) if args.get("mapping_id") else None
        before = int(args["before"]) if args.get("before") else None
    except ValueError:
        abort(400, "mapping_id and before must be numbers")
    outcome = args.get("outcome") or None
    if outcome and outcome not in OUTCOMES:
        abort(400, f"unknown outcome {outcome!r}")
    entries = _ext().store.sync_log(
        email=args.get("email") or None,
        mapping_id=mapping_id,
        outcome=outcome,
        limit=LOG_PAGE,
        before=before,
    )
    mappings = {m.id: m for m in _ext().store.list_mappings()}
    return render_template("log.html", entries=entries, mappings=mappings, q=args, page=LOG_PAGE)


@bp.get("/customers/<path:email>")
def customer(email: str) -> str:
    """One customer's tag history in both systems, and their mapped tags right now."""
    ext = _ext()
    entries = ext.store.sync_log(email=email, limit=500)
    mappings = ext.store.list_mappings()
    now: dict[str, Any] = {"klcode": None, "ac": None, "errors": []}
    try:
        if ext.klcode is not None:
            c = ext.klcode.find_customer(email)
            now["klcode"] = sorted(c.tags) if c else "no such customer"
        if ext.ac is not None:
            cid = ext.ac.find_contact_id(email)
            if cid is None:
                now["ac"] = "no such contact"
            else:
                names = {m.ac_tag_id: m.ac_tag_name for m in mappings}
                now["ac"] = sorted(names.get(t, f"tag {t}") for t in ext.ac.contact_tags(cid))
    except SyncError as exc:
        now["errors"].append(f"could not read the current tags: {exc.reason}")
    return render_template(
        "customer.html", email=email, entries=entries, now=now, mappings={m.id: m for m in mappings}
    )


@bp.get("/health")
def health() -> str:
    """Queue depths, failed jobs, AC request rate against the limit, last webhook per system."""
    ext = _ext()
    depths = queue_depths(ext.redis, [ext.settings.queue_name, RECONCILE_QUEUE])
    snap = Metrics(ext.redis).snapshot(queues=depths)
    failed = []
    for name in (ext.settings.queue_name, RECONCILE_QUEUE):
        q = Queue(name, connection=ext.redis, serializer=JSONSerializer)
        ids = q.failed_job_registry.get_job_ids(0, 49)
        for j in q.job_class.fetch_many(ids, connection=ext.redis, serializer=q.serializer):
            if j is not None:
                result = j.latest_result()
                text = (result.exc_string or "") if result else ""
                failed.append(
                    {
                        "id": j.id,
                        "queue": name,
                        "description": j.description,
                        "reason": text.strip().splitlines()[-1] if text.strip() else "unknown",
                    }
                )
    return render_template(
        "health.html", snap=snap, depths=depths, failed=failed, limit=ext.settings.ac_rate_limit
    )


@bp.post("/failed/replay")
def replay() -> Response:
    """Re-run failed jobs (one, or all) through the same sync path."""
    ext = _ext()
    wanted = request.form.get("job_id")
    n = 0
    for name in (ext.settings.queue_name, RECONCILE_QUEUE):
        registry = Queue(name, connection=ext.redis, serializer=JSONSerializer).failed_job_registry
        for jid in registry.get_job_ids():
            if wanted in (None, "", jid):
                registry.requeue(jid)
                n += 1
    flash(f"Requeued {n} failed job(s).")
    return redirect(url_for("admin.health"), code=303)
