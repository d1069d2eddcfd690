"""The admin JSON API (DESIGN.md section 6), behind ADMIN_TOKEN."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from mapping_store import (
    DIRECTIONS,
    OUTCOMES,
    SCHEDULES,
    DuplicateMapping,
    InvalidMapping,
    MappingNotFound,
)
from workers.mappings import ACUnavailable, UnknownACTag, create_mapping, update_mapping
from workers.queueing import enqueue_reconcile

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_LOG_LIMIT = 1000


class MappingSchema(Schema):
    """Fields a client may set; the same schema validates create (all) and PATCH (partial)."""

    class Meta:
        unknown = RAISE  # a typo in a field name is an error, not silently ignored

    klcode_tag = fields.String(required=True, validate=validate.Length(min=1, max=255))
    ac_tag_id = fields.Integer(
        required=True, strict=False, validate=validate.Range(min=1, max=2**31 - 1)
    )
    direction = fields.String(load_default="bidirectional", validate=validate.OneOf(DIRECTIONS))
    active = fields.Boolean(load_default=True)
    schedule = fields.String(load_default="off", validate=validate.OneOf(SCHEDULES))


class SyncSchema(Schema):
    class Meta:
        unknown = RAISE

    dry_run = fields.Boolean(load_default=False)


class LogQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = fields.String(load_default=None, validate=validate.Length(max=320))
    mapping_id = fields.Integer(load_default=None, validate=validate.Range(min=1))
    outcome = fields.String(load_default=None, validate=validate.OneOf(OUTCOMES))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_LOG_LIMIT))
    before = fields.Integer(load_default=None, validate=validate.Range(min=1))


def _err(status: int, error: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": error, **extra}), status


def authorized(token: str) -> bool:
    """HTTP Basic with any user and the token as password, or `Authorization: Bearer <token>`."""
    header = request.headers.get("Authorization", "")
    supplied = ""
    if header.startswith("Bearer "):
        supplied = header[7:].strip()
    elif request.authorization is not None and request.authorization.type == "basic":
        supplied = request.authorization.password or ""
    return bool(supplied) and hmac.compare_digest(supplied.encode(), token.encode())


def require_admin() -> tuple[Response, int] | None:
    token = current_app.config["ADMIN_TOKEN"]
    if not token:
        return _err(503, "not_configured", detail="ADMIN_TOKEN is not set: admin routes are closed")
    if not authorized(token):
        resp, status = _err(401, "unauthorized", detail="send the admin token (Basic or Bearer)")
        resp.headers["WWW-Authenticate"] = 'Basic realm="tagsync"'
        return resp, status
    return None


bp.before_request(require_admin)


@bp.before_request
def json_only_for_browsers() -> tuple[Response, int] | None:
    """A browser holding Basic credentials would send them with a cross-site form POST too;
    such a form cannot send application/json without a CORS preflight, so demand it."""
    basic = request.authorization is not None and request.authorization.type == "basic"
    if request.method == "POST" and basic and request.mimetype != "application/json":
        return _err(415, "unsupported_media_type", detail="send application/json (with Basic auth)")
    return None


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None and request.get_data():
        raise ValidationError({"_schema": ["body must be JSON"]})
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValidationError({"_schema": ["body must be a JSON object"]})
    return body


def _ext() -> Any:
    return current_app.extensions["tagsync"]


def _mapping_errors(exc: Exception) -> tuple[Response, int]:
    if isinstance(exc, ValidationError):
        return _err(400, "invalid_payload", fields=exc.messages)
    if isinstance(exc, DuplicateMapping):
        return _err(409, "already_mapped", field=exc.field, detail=str(exc))
    if isinstance(exc, InvalidMapping):
        return _err(400, "invalid_payload", fields={exc.field: [exc.message]})
    if isinstance(exc, UnknownACTag):
        return _err(400, "invalid_payload", fields={"ac_tag_id": [str(exc)]})
    if isinstance(exc, ACUnavailable):
        return _err(503, "ac_unavailable", detail=str(exc))
    if isinstance(exc, MappingNotFound):
        return _err(404, "not_found", detail=str(exc))
    raise exc


@bp.get("/mappings")
def list_mappings() -> Response:
    """Every mapping."""
    return jsonify({"mappings": [m.to_dict() for m in _ext().store.list_mappings()]})


@bp.post("/mappings")
def add_mapping() -> tuple[Response, int]:
    """Create a mapping; the AC tag id is checked against AC and its name filled in."""
    try:
        data = MappingSchema().load(_json_body())
        m = create_mapping(_ext().store, _ext().ac, **data)
    except (ValidationError, DuplicateMapping, InvalidMapping, UnknownACTag, ACUnavailable) as exc:
        return _mapping_errors(exc)
    return jsonify(m.to_dict()), 201


@bp.get("/mappings/<int:mapping_id>")
def get_mapping(mapping_id: int) -> tuple[Response, int]:
    """One mapping."""
    try:
        return jsonify(_ext().store.get_mapping(mapping_id).to_dict()), 200
    except MappingNotFound as exc:
        return _mapping_errors(exc)


@bp.patch("/mappings/<int:mapping_id>")
def patch_mapping(mapping_id: int) -> tuple[Response, int]:
    """Change any of a mapping's fields."""
    try:
        body = _json_body()
        data = MappingSchema(partial=True).load(body)
        data = {k: v for k, v in data.items() if k in body}  # defaults are for creation only
        m = update_mapping(_ext().store, _ext().ac, mapping_id, **data)
    except (
        ValidationError,
        DuplicateMapping,
        InvalidMapping,
        UnknownACTag,
        ACUnavailable,
        MappingNotFound,
    ) as exc:
        return _mapping_errors(exc)
    return jsonify(m.to_dict()), 200


@bp.delete("/mappings/<int:mapping_id>")
def delete_mapping(mapping_id: int) -> tuple[Response | str, int]:
    """Delete a mapping; tags already applied stay in both systems."""
    try:
        _ext().store.delete_mapping(mapping_id)
    except MappingNotFound as exc:
        return _mapping_errors(exc)
    return "", 204


@bp.post("/mappings/<int:mapping_id>/sync")
def sync_mapping(mapping_id: int) -> tuple[Response, int]:
    """Sync Now: queue a reconciliation of one mapping."""
    try:
        data = SyncSchema().load(_json_body())
        _ext().store.get_mapping(mapping_id)
    except (ValidationError, MappingNotFound) as exc:
        return _mapping_errors(exc)
    job = enqueue_reconcile(_ext().redis, mapping_id, dry_run=data["dry_run"])
    return jsonify(
        {"job_id": job.id if job else None, "mapping_id": mapping_id, "dry_run": data["dry_run"]}
    ), 202


@bp.post("/sync")
def sync_all() -> tuple[Response, int]:
    """Sync Now for every active mapping."""
    try:
        data = SyncSchema().load(_json_body())
    except ValidationError as exc:
        return _mapping_errors(exc)
    jobs = []
    for m in _ext().store.list_mappings():
        if m.active:
            job = enqueue_reconcile(_ext().redis, m.id, dry_run=data["dry_run"])
            jobs.append({"mapping_id": m.id, "job_id": job.id if job else None})
    return jsonify({"jobs": jobs}), 202


@bp.get("/jobs/<job_id>")
def job_status(job_id: str) -> tuple[Response, int]:
    """A Sync Now job: status, progress (pages read, actions planned and applied), result."""
    try:
        job = Job.fetch(job_id, connection=_ext().redis, serializer=JSONSerializer)
    except (NoSuchJobError, ValueError):  # ValueError: not even a well-formed job id
        return _err(404, "not_found", detail="no such job")
    status = job.get_status()
    status = getattr(status, "value", status)
    result = job.return_value() if status == "finished" else None
    return jsonify(
        {"job_id": job.id, "status": status, "progress": job.meta, "result": result}
    ), 200


@bp.get("/sync-log")
def sync_log() -> tuple[Response, int]:
    """Sync-log entries, newest first, filtered by email, mapping and outcome."""
    try:
        q = LogQuerySchema().load(request.args.to_dict())
    except ValidationError as exc:
        return _mapping_errors(exc)
    entries = _ext().store.sync_log(**q)
    return jsonify({"entries": [e.to_dict() for e in entries]}), 200


@bp.get("/openapi.json")
def openapi() -> Response:
    """This API, described as OpenAPI 3."""
    from .openapi import build_spec  # noqa: PLC0415 - built on demand; apispec is not on the hot path

    return jsonify(build_spec())
