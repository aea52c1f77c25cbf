"""The OpenAPI 3.1 document of the service's own endpoints, built from the same JSON Schemas
that validate requests and responses (one copy: the document cannot drift from validation)."""

from __future__ import annotations

import copy
from functools import cache

from . import __version__, validation
from .services import SERVICES

_FILES = ("common", "request", "response", "discovery", "feedback") + tuple(
    sorted({service.context_schema for service in SERVICES})
)
_OUTCOME = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code", "diagnostics"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string", "minLength": 1},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def _rewrite(node: object, current: str) -> object:
    """Point `$ref`s at components: `common.json#/$defs/x` -> `#/components/schemas/common.x`."""
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                target, _, pointer = value.partition("#")
                name = target.removesuffix(".json") if target else current
                definition = pointer.removeprefix("/$defs/")
                result[key] = f"#/components/schemas/{name}" + (
                    f".{definition}" if definition else ""
                )
            elif key not in {"$id", "$schema", "$defs"}:
                result[key] = _rewrite(value, current)
        return result
    if isinstance(node, list):
        return [_rewrite(item, current) for item in node]
    return node


def _components() -> dict:
    schemas: dict = {"OperationOutcome": _OUTCOME}
    for name in _FILES:
        document = validation.schema(name)
        schemas[name] = _rewrite(document, name)
        for definition, body in (document.get("$defs") or {}).items():
            schemas[f"{name}.{definition}"] = _rewrite(body, name)
    return schemas


def _json(schema_ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}


def _errors(*codes: int) -> dict:
    reasons = {
        400: "Malformed request: the OperationOutcome names the field",
        401: "No valid client JWT (the reason is logged, not returned)",
        404: "Unknown service",
        412: (
            "Data the rules need could be had neither from prefetch nor from the FHIR server, "
            "or would have to be read from a FHIR server the caller may not name (code "
            "forbidden: the FHIR-server policy; nothing is sent there)"
        ),
        413: "Body over the size limit",
        415: "Content-Type is not application/json",
    }
    return {
        str(code): {"description": reasons[code], "content": _json("OperationOutcome")}
        for code in codes
    }


def _health(status: str) -> dict:
    state = {"enum": ["ok", "unavailable", "not configured", "starting"]}
    schema = {
        "type": "object",
        "required": ["status", "version", "database", "redis", "spool"],
        "properties": {
            "status": {"const": status},
            "version": {"type": "string"},
            "database": {"enum": [*state["enum"], "behind"]},  # behind: the schema is older
            "redis": state,
            "spool": {"type": "integer", "minimum": 0, "description": "audit rows waiting"},
            "reason": {"type": "string", "description": "why not ready (503 only)"},
        },
    }
    return {"application/json": {"schema": schema}}


@cache
def document() -> dict:
    paths: dict = {
        "/health": {
            "get": {
                "summary": "Liveness and version; whether the database and Redis answer",
                "security": [],
                "responses": {"200": {"description": "Up", "content": _health("ok")}},
            }
        },
        "/health/ready": {
            "get": {
                "summary": "Readiness: 503 while a configured database or Redis does not answer "
                "or the database schema is behind",
                "security": [],
                "responses": {
                    "200": {"description": "Ready", "content": _health("ok")},
                    "503": {"description": "Not ready", "content": _health("unavailable")},
                },
            }
        },
        "/cds-services": {
            "get": {
                "summary": "CDS Hooks discovery",
                "responses": {
                    "200": {"description": "The services", "content": _json("discovery")},
                    **_errors(401),
                },
            }
        },
    }
    for service in SERVICES:
        request = {
            "allOf": [
                {"$ref": "#/components/schemas/request"},
                {
                    "type": "object",
                    "properties": {
                        "hook": {"const": service.hook},
                        "context": {"$ref": f"#/components/schemas/{service.context_schema}"},
                    },
                },
            ]
        }
        paths[f"/cds-services/{service.id}"] = {
            "post": {
                "summary": service.title,
                "description": service.description,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": request}},
                },
                "responses": {
                    "200": {"description": "Cards", "content": _json("response")},
                    **_errors(400, 401, 404, 412, 413, 415),
                },
            }
        }
        paths[f"/cds-services/{service.id}/feedback"] = {
            "post": {
                "summary": f"Feedback on cards of {service.id}",
                "requestBody": {"required": True, "content": _json("feedback")},
                "responses": {
                    "200": {
                        "description": "Stored (repeats are stored once)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["received", "stored"],
                                    "properties": {
                                        "received": {"type": "integer", "minimum": 1},
                                        "stored": {"type": "integer", "minimum": 0},
                                    },
                                }
                            }
                        },
                    },
                    **_errors(400, 401, 404, 413, 415),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cramp & sciatica CDS service",
            "version": __version__,
            "description": "CDS Hooks 2.0 endpoints. Requests need a client JWT (Bearer).",
        },
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(_components()),
            "securitySchemes": {"cdsClientJwt": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"cdsClientJwt": []}],
    }
