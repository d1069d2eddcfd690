"""The admin API described as OpenAPI 3, generated from the same marshmallow schemas it uses."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from mapping_store import DIRECTIONS, OUTCOMES, SCHEDULES

from .api import LogQuerySchema, MappingSchema, SyncSchema


class MappingOut(Schema):
    id = fields.Integer()
    klcode_tag = fields.String()
    ac_tag_id = fields.Integer()
    ac_tag_name = fields.String()
    direction = fields.String(metadata={"enum": list(DIRECTIONS)})
    active = fields.Boolean()
    schedule = fields.String(metadata={"enum": list(SCHEDULES)})
    customer_count = fields.Integer(allow_none=True)
    customer_count_at = fields.DateTime(allow_none=True)
    last_synced_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class LogEntryOut(Schema):
    id = fields.Integer()
    at = fields.DateTime()
    source = fields.String()
    event_id = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    mapping_id = fields.Integer(allow_none=True)
    tag = fields.String(allow_none=True)
    op = fields.String(allow_none=True)
    outcome = fields.String(metadata={"enum": list(OUTCOMES)})
    detail = fields.String()
    attempts = fields.Integer()
    job_id = fields.String(allow_none=True)


class ErrorOut(Schema):
    error = fields.String()
    detail = fields.String()
    fields_ = fields.Dict(data_key="fields")


def _json(schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": ref}}}


ERR = {
    "400": _json("Error", "invalid input, with field-level messages"),
    "401": _json("Error", "missing or wrong admin token"),
}
MAPPING_BODY = {"required": True, "content": {"application/json": {"schema": "MappingInput"}}}
SYNC_BODY = {"content": {"application/json": {"schema": "Sync"}}}
ID = [
    {
        "name": "mapping_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
]


def build_spec() -> dict[str, Any]:
    spec = APISpec(
        title="tagsync admin API",
        version="1.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Tag mappings between KlCode and ActiveCampaign, Sync Now, sync log."},
        servers=[{"url": "/"}],
        security=[{"bearer": []}, {"basic": []}],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("basic", {"type": "http", "scheme": "basic"})
    spec.components.schema("MappingInput", schema=MappingSchema)
    spec.components.schema("Mapping", schema=MappingOut)
    spec.components.schema("Sync", schema=SyncSchema)
    spec.components.schema("LogEntry", schema=LogEntryOut)
    spec.components.schema("Error", schema=ErrorOut)
    mapping_list = {
        "type": "object",
        "properties": {
            "mappings": {"type": "array", "items": {"$ref": "#/components/schemas/Mapping"}}
        },
    }
    job = {"type": "object", "properties": {"job_id": {"type": "string"}}}
    spec.path(
        "/api/v1/mappings",
        operations={
            "get": {
                "summary": "Every mapping",
                "responses": {"200": _json(mapping_list, "the mappings"), **ERR},
            },
            "post": {
                "summary": "Add a mapping (the AC tag id is checked against AC)",
                "requestBody": MAPPING_BODY,
                "responses": {
                    "201": _json("Mapping", "created"),
                    "409": _json("Error", "already mapped"),
                    "503": _json("Error", "AC unreachable"),
                    **ERR,
                },
            },
        },
    )
    spec.path(
        "/api/v1/mappings/{mapping_id}",
        parameters=ID,
        operations={
            "get": {
                "summary": "One mapping",
                "responses": {
                    "200": _json("Mapping", "the mapping"),
                    "404": _json("Error", "no such mapping"),
                    **ERR,
                },
            },
            "patch": {
                "summary": "Change any of a mapping's fields",
                "requestBody": MAPPING_BODY,
                "responses": {
                    "200": _json("Mapping", "updated"),
                    "404": _json("Error", "no such mapping"),
                    "409": _json("Error", "already mapped"),
                    **ERR,
                },
            },
            "delete": {
                "summary": "Delete a mapping (tags already applied stay)",
                "responses": {
                    "204": {"description": "deleted"},
                    "404": _json("Error", "no such mapping"),
                    **ERR,
                },
            },
        },
    )
    spec.path(
        "/api/v1/mappings/{mapping_id}/sync",
        parameters=ID,
        operations={
            "post": {
                "summary": "Sync Now: queue a reconciliation",
                "requestBody": SYNC_BODY,
                "responses": {
                    "202": _json(job, "queued"),
                    "404": _json("Error", "no such mapping"),
                    **ERR,
                },
            },
        },
    )
    spec.path(
        "/api/v1/sync",
        operations={
            "post": {
                "summary": "Sync Now for every active mapping",
                "requestBody": SYNC_BODY,
                "responses": {"202": _json({"type": "object"}, "queued"), **ERR},
            },
        },
    )
    spec.path(
        "/api/v1/jobs/{job_id}",
        parameters=[
            {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        operations={
            "get": {
                "summary": "A Sync Now job's status, progress and result",
                "responses": {
                    "200": _json({"type": "object"}, "the job"),
                    "404": _json("Error", "no such job"),
                    **ERR,
                },
            },
        },
    )
    spec.path(
        "/api/v1/sync-log",
        operations={
            "get": {
                "summary": "Sync-log entries, newest first",
                "parameters": [{"in": "query", "schema": LogQuerySchema}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "entries": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/LogEntry"},
                                }
                            },
                        },
                        "entries",
                    ),
                    **ERR,
                },
            },
        },
    )
    return spec.to_dict()
