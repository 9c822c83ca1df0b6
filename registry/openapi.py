"""The OpenAPI 3.1 description of the whole HTTP API, generated from the running app.

`build_spec(app)` walks `app.url_map` and describes every route from the table `OPERATIONS`
(keyed by endpoint): request bodies and success responses come from the marshmallow schemas
the views use (through apispec's MarshmallowPlugin), plus a few JSON schemas for bodies that
marshmallow does not model (predict's alternatives, the Open Inference Protocol tensors).
Authentication is read from the views themselves (`@public`, `@requires`), so the document
cannot drift from what `registry.access` enforces. A route missing from `OPERATIONS` is left
out of the document and reported by `undocumented_endpoints` (tests fail on it).

`get_spec(app)` builds the document once per app and caches it in `app.extensions`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema, fields

from registry import schemas
from registry.auth import ROLES, TOKEN_NAME_MAX
from registry.names import FORMATS
from registry.problems import PROBLEM_JSON
from registry.token_views import TokenCreateSchema, TokenOut

OPENAPI_VERSION = "3.1.0"
EXTENSION_KEY = "modelreg.openapi"
SECURITY_SCHEME = "bearerAuth"
# Routes that are not API operations: Flask's static files and the reference page's assets.
EXCLUDED_ENDPOINTS = frozenset({"static", "openapi.docs_asset"})
IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
REF_PATTERN = r"^(?:[0-9]{1,10}|[a-z][a-z0-9_-]{0,63})$"

EXAMPLE_MODEL = "house-price"
EXAMPLE_SHA256 = "9f2c6b1e0d4a8f3b7c5e2a1d9b8c7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a"
EXAMPLE_TIME = "2025-01-31T09:30:00+00:00"

TAGS = [
    {
        "name": "registry",
        "description": "Registered models, versions, aliases and the audit trail.",
    },
    {"name": "serving", "description": "Predictions and the in-process model cache."},
    {
        "name": "v2",
        "description": "Open Inference Protocol (KServe V2 / Triton HTTP). "
        'Errors on these routes are `{"error": "..."}`.',
    },
    {"name": "tokens", "description": "API token administration (admin role)."},
    {"name": "ops", "description": "Health, readiness, metrics and this API description."},
]

ERROR_TITLES = {
    400: "Malformed request: the body or a header cannot be parsed.",
    401: "No token, or an invalid, expired or revoked token.",
    403: "The token's role is too low, or the token is restricted to other models.",
    404: "Not found.",
    409: "Conflict with the current state.",
    413: "The request body is too large.",
    415: "Unsupported media type.",
    422: "The request is well-formed but its content is invalid; `errors` names each field.",
    503: "A dependency (database or artifact store) is unavailable; retry after `Retry-After`.",
}
V2_ERROR_TITLES = {
    400: "Bad request, including input validation (which the native API answers 422).",
    401: "No token, or an invalid, expired or revoked token.",
    403: "The token's role is too low, or the token is restricted to other models.",
    404: "Unknown model or version.",
    413: "The request body is too large.",
    503: "A dependency is unavailable, or the artifact failed its integrity check.",
}


# ---- response schemas that only the document needs ------------------------------------------


class ProblemSchema(Schema):
    """RFC 9457 problem details, as `registry.problems.problem` writes them."""

    type = fields.String(required=True, metadata={"description": "A URN naming the problem."})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        metadata={"description": "Field (or header) name -> what is wrong with it."},
    )
    request_id = fields.String(metadata={"description": "Also in the X-Request-ID header."})


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(schemas.ModelOut), required=True)
    next_cursor = fields.String(
        required=True, allow_none=True, metadata={"description": "Pass as ?cursor= for more."}
    )


class VersionListSchema(Schema):
    versions = fields.List(fields.Nested(schemas.VersionOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class EventListSchema(Schema):
    events = fields.List(fields.Nested(schemas.EventOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class AliasListSchema(Schema):
    aliases = fields.List(fields.Nested(schemas.AliasOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class TokenListSchema(Schema):
    tokens = fields.List(fields.Nested(TokenOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class TokenCreatedSchema(TokenOut):
    token = fields.String(
        required=True, metadata={"description": "The secret: shown this once, stored hashed."}
    )


# ---- JSON schemas marshmallow does not model -------------------------------------------------

_ROW = {
    "oneOf": [
        {"type": "array", "description": "Feature values in the model's feature order."},
        {"type": "object", "description": "Feature name -> value."},
    ]
}
_METHOD = {
    "type": "string",
    "enum": ["predict", "predict_proba"],
    "default": "predict",
    "description": "The model method to call; predict_proba only for models that have it.",
}


def _predict_alternative(key: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": [key],
        "properties": {key: schema, "method": _METHOD},
        "additionalProperties": False,
    }


JSON_SCHEMAS: dict[str, dict[str, Any]] = {
    "PredictRequest": {
        "description": "Exactly one of `instances`, `inputs`, `dataframe_split` or "
        "`dataframe_records`, plus an optional `method`.",
        "oneOf": [
            _predict_alternative(
                "instances",
                {"type": "array", "minItems": 1, "items": _ROW},
                "Rows: lists of values, or objects keyed by feature name.",
            ),
            _predict_alternative(
                "inputs",
                {
                    "oneOf": [
                        {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": {"type": "array"},
                            "description": "Columns: feature name -> values.",
                        },
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": _ROW,
                            "description": "Rows, as with `instances`.",
                        },
                    ]
                },
                "Columns (an object of lists) or rows (a list).",
            ),
            _predict_alternative(
                "dataframe_split",
                {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "columns": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        "data": {"type": "array", "items": {"type": "array"}, "minItems": 1},
                        "index": {"type": "array", "description": "Ignored."},
                    },
                    "additionalProperties": False,
                },
                "MLflow's pandas split orientation.",
            ),
            _predict_alternative(
                "dataframe_records",
                {"type": "array", "minItems": 1, "items": {"type": "object"}},
                "MLflow's pandas records orientation.",
            ),
        ],
    },
    "PredictResponse": {
        "type": "object",
        "required": ["model", "version", "predictions"],
        "properties": {
            "model": {"type": "string"},
            "version": {"type": "integer", "description": "The version that answered."},
            "predictions": {"type": "array", "description": "One entry per input row."},
            "classes": {
                "type": "array",
                "description": "With predict_proba: the class of each probability column.",
            },
        },
    },
    "CachedModel": {
        "type": "object",
        "required": [
            "name",
            "version",
            "sha256",
            "bytes",
            "load_seconds",
            "loaded_at",
            "hits",
            "last_used_at",
        ],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "integer"},
            "sha256": {"type": "string"},
            "bytes": {"type": "integer", "description": "Estimated memory held."},
            "load_seconds": {"type": "number"},
            "loaded_at": {"type": "string", "format": "date-time"},
            "hits": {"type": "integer"},
            "last_used_at": {"type": "string", "format": "date-time"},
        },
    },
    "CacheFailure": {
        "type": "object",
        "required": ["name", "version", "sha256", "error", "detail", "at"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "integer"},
            "sha256": {"type": "string"},
            "error": {"type": "string"},
            "detail": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
        },
    },
    "CacheStatus": {
        "type": "object",
        "required": ["pid", "models", "failures", "stats"],
        "properties": {
            "pid": {
                "type": "integer",
                "description": "The server process that answered: each worker has its own cache.",
            },
            "models": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/CachedModel"},
                "description": "Loaded versions, most recently used first.",
            },
            "failures": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/CacheFailure"},
                "description": "The last load failure per version, newest first.",
            },
            "stats": {
                "type": "object",
                "properties": {
                    key: {"type": "integer"}
                    for key in (
                        "hits",
                        "misses",
                        "coalesced",
                        "loads",
                        "load_failures",
                        "evictions",
                        "models",
                        "bytes",
                        "max_models",
                        "max_bytes",
                    )
                },
            },
        },
    },
    "WarmResponse": {
        "type": "object",
        "required": ["name", "version", "sha256", "bytes", "load_seconds"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "integer"},
            "sha256": {"type": "string"},
            "bytes": {"type": "integer"},
            "load_seconds": {"type": "number"},
        },
    },
    "EvictResponse": {
        "type": "object",
        "required": ["evicted"],
        "properties": {
            "evicted": {
                "type": "integer",
                "minimum": 0,
                "description": "How many cached versions were dropped.",
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "const": "ok"}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "unavailable"]},
            "checks": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["status", "latency_ms"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "unavailable"]},
                        "detail": {"type": "string"},
                        "latency_ms": {"type": "number"},
                    },
                },
            },
        },
    },
    "OpenAPIDocument": {
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "description": "This document.",
    },
    # -- Open Inference Protocol --
    "V2Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "V2ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "V2Live": {
        "type": "object",
        "required": ["live"],
        "properties": {"live": {"type": "boolean"}},
    },
    "V2Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {"ready": {"type": "boolean"}, "error": {"type": "string"}},
    },
    "V2TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "V2ModelMetadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2TensorMetadata"}},
            "outputs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/V2TensorMetadata"},
            },
            "parameters": {
                "type": "object",
                "properties": {
                    "version": {"type": "string"},
                    "feature_names": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    "V2ModelReady": {
        "type": "object",
        "required": ["name", "version", "ready"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "ready": {"type": "boolean"},
            "error": {"type": "string"},
        },
    },
    "V2InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string", "description": "Echoed in the response."},
            "parameters": {
                "type": "object",
                "properties": {
                    "content_type": {
                        "type": "string",
                        "description": "`pd`: one input per feature (columns).",
                    },
                    "binary_data_output": {"type": "boolean"},
                },
            },
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "datatype": {
                            "type": "string",
                            "enum": [
                                "BOOL",
                                "INT8",
                                "INT16",
                                "INT32",
                                "INT64",
                                "UINT8",
                                "UINT16",
                                "UINT32",
                                "UINT64",
                                "FP16",
                                "FP32",
                                "FP64",
                                "BYTES",
                            ],
                        },
                        "data": {"description": "Row-major values, flat or nested."},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                        },
                    },
                },
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "enum": ["predict", "predict_proba"]},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data": {"type": "boolean"}},
                        },
                    },
                },
            },
        },
    },
    "V2InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape"],
                    "properties": {
                        "name": {"type": "string"},
                        "datatype": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "data": {"type": "array"},
                        "parameters": {"type": "object"},
                    },
                },
            },
        },
    },
    "V2RepositoryIndexRequest": {
        "type": "object",
        "properties": {
            "ready": {
                "type": "boolean",
                "default": False,
                "description": "Only models that are loaded.",
            }
        },
    },
    "V2RepositoryIndex": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "version", "state", "reason"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                "reason": {"type": "string"},
            },
        },
    },
    "V2LoadRequest": {
        "type": "object",
        "properties": {
            "parameters": {
                "type": "object",
                "description": "`config` and `file:` overrides are not supported.",
            }
        },
    },
    "V2LoadResponse": {
        "type": "object",
        "required": ["name", "version", "state", "load_seconds"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "state": {"type": "string", "const": "READY"},
            "load_seconds": {"type": "number"},
        },
    },
    "V2UnloadResponse": {
        "type": "object",
        "required": ["name", "version", "evicted"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "evicted": {"type": "integer", "minimum": 0},
        },
    },
    "V2ModelStats": {
        "type": "object",
        "required": ["model_stats"],
        "properties": {
            "model_stats": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "name",
                        "version",
                        "last_inference",
                        "inference_count",
                        "execution_count",
                        "inference_stats",
                        "batch_stats",
                    ],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "last_inference": {
                            "type": "integer",
                            "description": "Milliseconds since the epoch.",
                        },
                        "inference_count": {"type": "integer"},
                        "execution_count": {"type": "integer"},
                        "inference_stats": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["count", "ns"],
                                "properties": {
                                    "count": {"type": "integer"},
                                    "ns": {"type": "integer"},
                                },
                            },
                        },
                        "batch_stats": {"type": "array"},
                    },
                },
            }
        },
    },
}

# Details the marshmallow response schemas leave open; every key they list is always dumped.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
RESPONSE_DETAILS: dict[str, dict[str, dict[str, Any]]] = {
    "ModelOut": {
        "tags": _STRING_MAP,
        "aliases": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "Alias -> version number.",
        },
    },
    "VersionOut": {
        "status": {"type": "string", "enum": ["ready", "archived"]},
        "format": {"type": "string", "enum": list(FORMATS)},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "tags": _STRING_MAP,
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "source": {
            "type": "object",
            "properties": {k: {"type": ["string", "null"]} for k in ("run", "data", "code")},
        },
        "input_example": {"type": ["array", "null"], "description": "A list of rows."},
        "signature": {"anyOf": [{"$ref": "#/components/schemas/Signature"}, {"type": "null"}]},
        "aliases": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The aliases pointing at this version.",
        },
    },
    "TokenOut": {"role": {"type": "string", "enum": list(ROLES)}},
    "TokenCreated": {"role": {"type": "string", "enum": list(ROLES)}},
}
# Merged into the generated request schemas (a None value removes that keyword).
REQUEST_DETAILS: dict[str, dict[str, dict[str, Any]]] = {
    "ModelCreate": {"name": {"type": "string", "pattern": MODEL_NAME_PATTERN}},
    # Range(min=0, min_inclusive=False): apispec writes an inclusive minimum.
    "TokenCreate": {"expires_in_days": {"minimum": None, "exclusiveMinimum": 0}},
    "Promote": {
        "alias": {
            "type": "string",
            "pattern": ALIAS_PATTERN,
            "default": "production",
            "description": "Not `latest` or `versions` (reserved).",
        }
    },
}


# ---- operation table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """How one endpoint is described; the parts that Flask does not know."""

    tag: str
    summary: str
    responses: dict[int, dict[str, Any]]
    errors: tuple[int, ...] = ()
    body: dict[str, Any] | None = None
    query: tuple[dict[str, Any], ...] = ()
    headers: tuple[dict[str, Any], ...] = ()
    description: str = ""
    v2: bool = False  # errors are {"error": ...} instead of problem+json
    extra: dict[str, Any] = field(default_factory=dict)


def _v2_default_and_versioned(
    default: str,
    versioned: str,
    summary: str,
    responses: dict[int, dict[str, Any]],
    errors: tuple[int, ...],
    **options: Any,
) -> dict[str, Op]:
    """The same V2 operation without a version (the default alias) and with one."""
    return {
        f"v2.{default}": Op(
            "v2",
            f"{summary} (default version)",
            responses,
            errors,
            v2=True,
            description=DEFAULT_VERSION_NOTE,
            **options,
        ),
        f"v2.{versioned}": Op(
            "v2", f"{summary} (a version)", responses, errors, v2=True, **options
        ),
    }


DEFAULT_VERSION_NOTE = "Without a version: `production` when the model has it, else `latest`."


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(
    description: str,
    schema: Any,
    *,
    example: Any = None,
    headers: dict[str, Any] | None = None,
    media: str = "application/json",
) -> dict:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    response: dict[str, Any] = {"description": description, "content": {media: content}}
    if headers:
        response["headers"] = headers
    return response


def _empty(description: str) -> dict[str, Any]:
    return {"description": description}


def _body(
    schema: Any,
    *,
    required: bool = True,
    examples: dict[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = examples
    body: dict[str, Any] = {"required": required, "content": {"application/json": media}}
    if description:
        body["description"] = description
    return body


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


VERSION_HEADERS = {
    "X-Model-Version": _header("The version that answered.", {"type": "integer"}),
    "X-Model-Stale": _header(
        "`true` when the registry was unreachable and the last known alias mapping was used."
    ),
}
LOCATION = {"Location": _header("The new resource.")}
REASON_QUERY = {
    "in": "query",
    "name": "reason",
    "schema": {"type": "string", "maxLength": schemas.MAX_REASON},
    "description": "Why (recorded in the audit trail); used when there is no JSON body.",
}
REASON_BODY = _body(
    _ref("Reason"), required=False, description="Optional: why (recorded in the audit trail)."
)
IF_NONE_MATCH = {
    "in": "header",
    "name": "If-None-Match",
    "schema": {"type": "string"},
    "description": "The artifact's sha256 (its ETag) from an earlier download.",
}
V2_HEADER_LENGTH = {
    "in": "header",
    "name": "Inference-Header-Content-Length",
    "schema": {"type": "integer", "minimum": 1},
    "description": "Binary tensor extension: the length of the JSON header that starts the "
    "body; binary tensor data follows it.",
}

REGISTER_EXAMPLE_METADATA = {
    "format": "joblib",
    "description": "gradient boosting on the 2024 listings",
    "tags": {"team": "pricing"},
    "metrics": {"rmse": 0.231},
    "params": {"n_estimators": 300},
    "source": {"run": "run-42", "data": "s3://listings/2024", "code": "git:3f2a9c1"},
    "input_example": [[3.0, 2.0, 1450.0]],
}
VERSION_EXAMPLE = {
    "name": EXAMPLE_MODEL,
    "version": 7,
    "status": "ready",
    "format": "joblib",
    "sha256": EXAMPLE_SHA256,
    "size": 48213,
    "description": REGISTER_EXAMPLE_METADATA["description"],
    "tags": {"team": "pricing"},
    "metrics": {"rmse": 0.231},
    "params": {"n_estimators": 300},
    "source": REGISTER_EXAMPLE_METADATA["source"],
    "input_example": [[3.0, 2.0, 1450.0]],
    "signature": {"n_features": 3, "methods": ["predict"]},
    "aliases": [],
    "created_at": EXAMPLE_TIME,
    "created_by": "alice",
    "updated_at": EXAMPLE_TIME,
}
MODEL_EXAMPLE = {
    "name": EXAMPLE_MODEL,
    "description": "Sale price from rooms and floor area",
    "tags": {"team": "pricing"},
    "aliases": {"production": 7, "staging": 8},
    "latest_version": 8,
    "created_at": EXAMPLE_TIME,
    "created_by": "alice",
    "updated_at": EXAMPLE_TIME,
}

_NATIVE_BODY_ERRORS = (400, 401, 403, 413, 415, 422, 503)


def _list_query(*names: str) -> tuple[dict[str, Any], ...]:
    """Marker: the named ListQuerySchema fields, converted by the MarshmallowPlugin."""
    return ({"x-list-query": list(names)},)


OPERATIONS: dict[str, Op] = {
    # -- registry: models --
    "registry.create_model": Op(
        "registry",
        "Create a registered model",
        {
            201: _json(
                "The new model.",
                _ref("ModelOut"),
                example=MODEL_EXAMPLE | {"aliases": {}, "latest_version": None},
                headers=LOCATION,
            )
        },
        (*_NATIVE_BODY_ERRORS, 409),
        body=_body(
            _ref("ModelCreate"),
            examples={
                "create": {
                    "value": {
                        "name": EXAMPLE_MODEL,
                        "description": "Sale price from rooms and floor area",
                        "tags": {"team": "pricing"},
                    }
                }
            },
        ),
        description=(
            "409 when a model of that name exists; 403 when the token is restricted to "
            "other models."
        ),
    ),
    "registry.list_models": Op(
        "registry",
        "List registered models",
        {
            200: _json(
                "A page of models.",
                _ref("ModelList"),
                example={"models": [MODEL_EXAMPLE], "next_cursor": None},
            )
        },
        (401, 403, 422, 503),
        query=_list_query("limit", "cursor", "q", "tag"),
    ),
    "registry.get_model": Op(
        "registry",
        "Get a registered model",
        {200: _json("The model, with its aliases.", _ref("ModelOut"), example=MODEL_EXAMPLE)},
        (401, 403, 404, 503),
    ),
    "registry.update_model": Op(
        "registry",
        "Update a model's description or tags",
        {200: _json("The updated model.", _ref("ModelOut"))},
        (*_NATIVE_BODY_ERRORS, 404),
        body=_body(
            _ref("ModelUpdate"),
            examples={
                "retag": {
                    "value": {"tags": {"team": "pricing", "obsolete": None}, "reason": "team tag"}
                }
            },
        ),
        description="`tags` is a merge patch: a null value removes that tag.",
    ),
    "registry.delete_model": Op(
        "registry",
        "Delete a registered model",
        {204: _empty("Deleted.")},
        (*_NATIVE_BODY_ERRORS, 404, 409),
        body=REASON_BODY,
        query=(REASON_QUERY,),
        description="409 while an alias points at one of its versions.",
    ),
    # -- registry: versions --
    "registry.register_version": Op(
        "registry",
        "Register a new version (multipart upload)",
        {
            201: _json(
                "The new version record.",
                _ref("VersionOut"),
                example=VERSION_EXAMPLE,
                headers=LOCATION,
            )
        },
        (*_NATIVE_BODY_ERRORS, 409),
        body={
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["artifact"],
                        "properties": {
                            "artifact": {
                                "type": "string",
                                "format": "binary",
                                "contentMediaType": "application/octet-stream",
                                "description": "The serialized model (joblib, skops or ONNX).",
                            },
                            "metadata": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": _ref("VersionMetadata"),
                                "description": "JSON text: a VersionMetadata object. Without "
                                "`format` the artifact's file extension decides.",
                                "example": json.dumps(REGISTER_EXAMPLE_METADATA),
                            },
                        },
                    },
                    "encoding": {
                        "artifact": {"contentType": "application/octet-stream"},
                        "metadata": {"contentType": "application/json"},
                    },
                    "examples": {
                        "joblib": {
                            "summary": "A joblib artifact with metadata",
                            "value": {
                                "artifact": "<the model file's bytes>",
                                "metadata": json.dumps(REGISTER_EXAMPLE_METADATA),
                            },
                        }
                    },
                }
            },
        },
        description="Creates the registered model if it does not exist. The server assigns "
        "the next version number (never reused), computes sha256 and size, and infers the "
        "signature where it can. Pickle-based formats need the publisher role and may be "
        "disabled on this server (422).",
    ),
    "registry.list_versions": Op(
        "registry",
        "List a model's versions",
        {200: _json("A page of versions, newest first.", _ref("VersionList"))},
        (401, 403, 404, 422, 503),
        query=_list_query("limit", "cursor", "status", "tag"),
    ),
    "registry.get_version": Op(
        "registry",
        "Get a version",
        {200: _json("The version record.", _ref("VersionOut"), example=VERSION_EXAMPLE)},
        (401, 403, 404, 503),
    ),
    "registry.update_version": Op(
        "registry",
        "Update a version's description, tags or status",
        {200: _json("The updated version record.", _ref("VersionOut"))},
        (*_NATIVE_BODY_ERRORS, 404, 409),
        body=_body(
            _ref("VersionUpdate"),
            examples={"archive": {"value": {"status": "archived", "reason": "superseded by v8"}}},
        ),
        description="Changing `status` (archive or restore) needs the operator role; 409 "
        "when archiving a version an alias points at.",
    ),
    "registry.delete_version": Op(
        "registry",
        "Delete a version",
        {204: _empty("Deleted; its number is never reused.")},
        (*_NATIVE_BODY_ERRORS, 404, 409),
        body=REASON_BODY,
        query=(REASON_QUERY,),
        description="409 while an alias points at it.",
    ),
    "registry.download_artifact": Op(
        "registry",
        "Download a version's artifact",
        {
            200: {
                "description": "The artifact's bytes.",
                "headers": {
                    "ETag": _header("The artifact's sha256."),
                    "X-Content-SHA256": _header("The artifact's sha256."),
                    "X-Model-Version": VERSION_HEADERS["X-Model-Version"],
                },
                "content": {
                    "application/octet-stream": {
                        "schema": {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "application/octet-stream",
                        }
                    }
                },
            },
            304: _empty("Not modified: If-None-Match matched the artifact's sha256."),
        },
        (401, 403, 404, 503),
        headers=(IF_NONE_MATCH,),
    ),
    # -- registry: aliases --
    "registry.promote": Op(
        "registry",
        "Promote a version to an alias",
        {
            200: _json(
                "The alias moved.",
                _ref("AliasMoveOut"),
                example={
                    "name": EXAMPLE_MODEL,
                    "alias": "production",
                    "version": 7,
                    "previous_version": 6,
                },
            )
        },
        (*_NATIVE_BODY_ERRORS, 404, 409),
        body=_body(
            _ref("Promote"),
            required=False,
            examples={
                "production": {
                    "summary": "Promote to production",
                    "value": {"alias": "production", "reason": "better rmse"},
                },
                "compare-and-set": {
                    "summary": "Only if production still points at version 6",
                    "value": {
                        "alias": "production",
                        "reason": "better rmse",
                        "expected_version": 6,
                    },
                },
            },
        ),
        description="Before the alias moves, the version is loaded, its sha256 verified and "
        "its input example (if any) predicted; a failure is 422 and the alias does not move. "
        "With `expected_version`, 409 when the alias points elsewhere. An empty body "
        "promotes to `production`.",
    ),
    "registry.rollback": Op(
        "registry",
        "Roll an alias back to its previous version",
        {
            200: _json(
                "The alias moved back.",
                _ref("AliasMoveOut"),
                example={
                    "name": EXAMPLE_MODEL,
                    "alias": "production",
                    "version": 6,
                    "previous_version": 7,
                },
            )
        },
        (*_NATIVE_BODY_ERRORS, 404, 409),
        body=REASON_BODY,
        query=(REASON_QUERY,),
        description="Undoes the most recent promotion of the alias that has not been rolled "
        "back yet; 409 when there is nothing left to roll back to.",
    ),
    "registry.list_aliases": Op(
        "registry",
        "List a model's aliases",
        {200: _json("The aliases.", _ref("AliasList"))},
        (401, 403, 404, 422, 503),
        query=_list_query("limit", "cursor"),
    ),
    "registry.delete_alias": Op(
        "registry",
        "Delete an alias",
        {204: _empty("Deleted.")},
        (*_NATIVE_BODY_ERRORS, 404),
        body=REASON_BODY,
        query=(REASON_QUERY,),
    ),
    "registry.list_events": Op(
        "registry",
        "The model's audit trail",
        {200: _json("A page of events, newest first.", _ref("EventList"))},
        (401, 403, 404, 422, 503),
        query=_list_query("limit", "cursor", "type"),
    ),
    # -- tokens --
    "tokens.create_token": Op(
        "tokens",
        "Create an API token",
        {201: _json("The token, with its secret (shown only this once).", _ref("TokenCreated"))},
        (*_NATIVE_BODY_ERRORS, 409),
        body=_body(
            _ref("TokenCreate"),
            examples={
                "service": {
                    "value": {
                        "name": "pricing-service",
                        "role": "reader",
                        "models": [EXAMPLE_MODEL],
                        "expires_in_days": 90,
                    }
                }
            },
        ),
        description=(
            "A token grants no more than it has: 403 for a role above its own, models "
            "outside its own list (a token limited to models must name them), or an expiry "
            "later than its own (a token that expires must give one)."
        ),
    ),
    "tokens.list_tokens": Op(
        "tokens",
        "List API tokens (never their secrets)",
        {200: _json("The tokens.", _ref("TokenList"))},
        (401, 403, 422, 503),
        query=_list_query("limit", "cursor"),
        description="Only the tokens within the caller's reach: those it could have granted.",
    ),
    "tokens.revoke_token": Op(
        "tokens",
        "Revoke an API token",
        {200: _json("The revoked token.", _ref("TokenOut"))},
        (401, 403, 404, 503),
        description=(
            "Every serving process refuses the token within ALIAS_REFRESH_SECONDS. A token "
            "outside the caller's reach answers 404, as if it did not exist."
        ),
    ),
    # -- serving --
    "serving.predict": Op(
        "serving",
        "Predict with a version or an alias",
        {
            200: _json(
                "The predictions, and which version made them.",
                _ref("PredictResponse"),
                example={"model": EXAMPLE_MODEL, "version": 1, "predictions": [412000.0]},
                headers={
                    **VERSION_HEADERS,
                    "X-Model-Runtime": _header("The runtime that answered."),
                },
            )
        },
        (400, 401, 403, 404, 413, 415, 422, 503),
        body=_body(
            _ref("PredictRequest"),
            examples={
                "instances": {"summary": "Rows", "value": {"instances": [[3.0, 2.0, 1450.0]]}},
                "instances-by-name": {
                    "summary": "Rows keyed by feature name",
                    "value": {"instances": [{"rooms": 3, "baths": 2, "sqft": 1450}]},
                },
                "inputs": {
                    "summary": "Columns",
                    "value": {"inputs": {"rooms": [3], "baths": [2], "sqft": [1450]}},
                },
                "dataframe_split": {
                    "summary": "MLflow split",
                    "value": {
                        "dataframe_split": {
                            "columns": ["rooms", "baths", "sqft"],
                            "data": [[3, 2, 1450]],
                        }
                    },
                },
                "predict_proba": {
                    "summary": "Class probabilities",
                    "value": {"instances": [[3.0, 2.0, 1450.0]], "method": "predict_proba"},
                },
            },
        ),
        description="`ref` is a version number (pinned), an alias (follows promotions) or "
        "`latest`. 422 names the rows and fields that are wrong.",
    ),
    "serving.cache_status": Op(
        "serving",
        "What the model cache holds",
        {200: _json("Loaded versions, recent load failures and counters.", _ref("CacheStatus"))},
        (401, 403, 503),
        description=(
            "Versions and failures of the models the token may use; the counters are the "
            "process's own."
        ),
    ),
    "serving.warm": Op(
        "serving",
        "Load a version into the cache",
        {200: _json("The loaded version.", _ref("WarmResponse"))},
        (401, 403, 404, 422, 503),
    ),
    "serving.evict": Op(
        "serving",
        "Evict a version from the cache",
        {200: _json("How many were evicted.", _ref("EvictResponse"))},
        (401, 403, 404, 503),
    ),
    # -- ops --
    "ops.healthz": Op("ops", "Liveness", {200: _json("The process is up.", _ref("Health"))}),
    "ops.readyz": Op(
        "ops",
        "Readiness: database and artifact store",
        {
            200: _json("Ready.", _ref("Readiness")),
            503: _json(
                "A dependency is unavailable.",
                _ref("Readiness"),
                headers={"Retry-After": _header("Seconds.")},
            ),
        },
    ),
    "metrics.metrics": Op(
        "ops",
        "Prometheus metrics",
        {
            200: {
                "description": "Prometheus text exposition.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    ),
    "openapi.openapi_json": Op(
        "ops",
        "This OpenAPI document",
        {
            200: _json("The OpenAPI 3.1 document.", _ref("OpenAPIDocument")),
            304: _empty("Not modified: If-None-Match matched the document's ETag."),
        },
    ),
    "openapi.docs": Op(
        "ops",
        "The API reference page",
        {
            200: {
                "description": "An HTML page that renders this document (works offline).",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
    ),
    # -- Open Inference Protocol --
    "v2.server_metadata": Op(
        "v2",
        "Server metadata",
        {200: _json("Server metadata.", _ref("V2ServerMetadata"))},
        v2=True,
    ),
    "v2.live": Op("v2", "Server liveness", {200: _json("Live.", _ref("V2Live"))}, v2=True),
    "v2.ready": Op(
        "v2",
        "Server readiness",
        {
            200: _json("Ready.", _ref("V2Ready")),
            503: _json("The database is unavailable.", _ref("V2Ready")),
        },
        v2=True,
    ),
    **_v2_default_and_versioned(
        "model_metadata",
        "model_version_metadata",
        "Model metadata",
        {
            200: _json(
                "Inputs, outputs and versions.", _ref("V2ModelMetadata"), headers=VERSION_HEADERS
            )
        },
        (400, 401, 403, 404, 503),
    ),
    **_v2_default_and_versioned(
        "model_ready",
        "model_version_ready",
        "Model readiness",
        {
            200: _json("Loaded and ready.", _ref("V2ModelReady"), headers=VERSION_HEADERS),
            503: _json("The version cannot be loaded.", _ref("V2ModelReady")),
        },
        (401, 403, 404),
    ),
    **_v2_default_and_versioned(
        "infer",
        "infer_version",
        "Inference",
        {},
        (400, 401, 403, 404, 413, 503),
        extra={"infer": True},
    ),
    "v2.repository_index": Op(
        "v2",
        "Repository index: loaded versions and load failures",
        {200: _json("The index.", _ref("V2RepositoryIndex"))},
        (400, 401, 403, 413, 503),
        v2=True,
        body=_body(_ref("V2RepositoryIndexRequest"), required=False),
    ),
    "v2.repository_load": Op(
        "v2",
        "Load the model's default version",
        {200: _json("Loaded.", _ref("V2LoadResponse"), headers=VERSION_HEADERS)},
        (400, 401, 403, 404, 413, 503),
        v2=True,
        body=_body(_ref("V2LoadRequest"), required=False),
    ),
    "v2.repository_unload": Op(
        "v2",
        "Unload the model's default version",
        {200: _json("Unloaded.", _ref("V2UnloadResponse"), headers=VERSION_HEADERS)},
        (401, 403, 404, 503),
        v2=True,
    ),
    "v2.all_stats": Op(
        "v2",
        "Inference statistics of every model",
        {200: _json("Statistics.", _ref("V2ModelStats"))},
        (401, 403, 503),
        v2=True,
    ),
    "v2.model_stats": Op(
        "v2",
        "Inference statistics of a model",
        {200: _json("Statistics.", _ref("V2ModelStats"))},
        (401, 403, 404, 503),
        v2=True,
    ),
    "v2.model_version_stats": Op(
        "v2",
        "Inference statistics of a version",
        {200: _json("Statistics.", _ref("V2ModelStats"))},
        (401, 403, 404, 503),
        v2=True,
    ),
}

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "name": {
        "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN},
        "description": "The registered model's name.",
        "example": EXAMPLE_MODEL,
    },
    "ref": {
        "schema": {"type": "string", "pattern": REF_PATTERN},
        "description": "A version number, an alias, or `latest` (the highest non-archived "
        "version).",
        "example": "1",
    },
    "version": {
        "schema": {"type": "string", "pattern": REF_PATTERN},
        "description": "A version number, an alias, or `latest`.",
        "example": "1",
    },
    "alias": {
        "schema": {"type": "string", "pattern": ALIAS_PATTERN},
        "description": "An alias such as `production`.",
        "example": "production",
    },
    "token_name": {
        "schema": {"type": "string", "minLength": 1, "maxLength": TOKEN_NAME_MAX},
        "description": "The token's name.",
        "example": "pricing-service",
    },
}

QUERY_DETAILS: dict[str, dict[str, Any]] = {
    "limit": {"description": "Page size."},
    "cursor": {"description": "`next_cursor` from the previous page."},
    "q": {"description": "A substring of the model name."},
    "tag": {"description": "`key` (has the tag) or `key:value`; repeat for all of several."},
    "status": {"description": "Only versions in this status."},
    "type": {
        "description": "Only events of this type (create, register, promote, rollback, "
        "archive, delete, ...)."
    },
}

MARSHMALLOW_COMPONENTS: dict[str, type[Schema]] = {
    "Problem": ProblemSchema,
    "Source": schemas.SourceSchema,
    "Column": schemas.ColumnSchema,
    "Signature": schemas.SignatureSchema,
    "ModelCreate": schemas.ModelCreateSchema,
    "ModelUpdate": schemas.ModelUpdateSchema,
    "VersionMetadata": schemas.VersionMetadataSchema,
    "VersionUpdate": schemas.VersionUpdateSchema,
    "Promote": schemas.PromoteSchema,
    "Reason": schemas.ReasonSchema,
    "ModelOut": schemas.ModelOut,
    "VersionOut": schemas.VersionOut,
    "AliasOut": schemas.AliasOut,
    "AliasMoveOut": schemas.AliasMoveOut,
    "EventOut": schemas.EventOut,
    "ModelList": ModelListSchema,
    "VersionList": VersionListSchema,
    "EventList": EventListSchema,
    "AliasList": AliasListSchema,
    "TokenCreate": TokenCreateSchema,
    "TokenOut": TokenOut,
    "TokenCreated": TokenCreatedSchema,
    "TokenList": TokenListSchema,
}

_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """`/models/<name>/versions/<ref>` -> `/models/{name}/versions/{ref}`."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def operation_id(endpoint: str) -> str:
    blueprint, _, function = endpoint.rpartition(".")
    words = function.split("_")
    if blueprint == "v2":
        return "v2" + "".join(w.capitalize() for w in words)
    return words[0] + "".join(w.capitalize() for w in words[1:])


def required_role(view: Any, method: str) -> str | None:
    """The role `registry.access` demands of this view, or None when it is public."""
    if getattr(view, "_public", False):
        return None
    return getattr(view, "_required_role", None) or (
        "reader" if method in SAFE_METHODS else "admin"
    )


def undocumented_endpoints(app: Flask) -> list[str]:
    """Routes of the app that the document does not describe."""
    return sorted(
        f"{sorted(rule.methods - IGNORED_METHODS)} {rule.rule} ({rule.endpoint})"
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in EXCLUDED_ENDPOINTS and rule.endpoint not in OPERATIONS
    )


def _error_responses() -> dict[str, dict[str, Any]]:
    problem = {"schema": _ref("Problem")}
    v2_error = {"schema": _ref("V2Error")}
    responses: dict[str, dict[str, Any]] = {}
    for status, description in ERROR_TITLES.items():
        response: dict[str, Any] = {"description": description, "content": {PROBLEM_JSON: problem}}
        responses[f"Problem{status}"] = response
    for status, description in V2_ERROR_TITLES.items():
        content: dict[str, Any] = {"application/json": v2_error}
        if status == 404:
            description += " A path that matches no route at all is answered with problem+json."
            content[PROBLEM_JSON] = problem
        responses[f"V2Error{status}"] = {"description": description, "content": content}
    for key in ("Problem401", "V2Error401"):
        responses[key]["headers"] = {"WWW-Authenticate": _header("`Bearer`.")}
    for key in ("Problem503", "V2Error503"):
        responses[key]["headers"] = {"Retry-After": _header("Seconds.")}
    return responses


def _infer_operation() -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": _ref("V2InferRequest"),
                "examples": {
                    "rows": {
                        "summary": "One [N, F] tensor",
                        "value": {
                            "inputs": [
                                {
                                    "name": "input",
                                    "shape": [1, 3],
                                    "datatype": "FP64",
                                    "data": [3.0, 2.0, 1450.0],
                                }
                            ]
                        },
                    },
                    "columns": {
                        "summary": "One tensor per feature",
                        "value": {
                            "parameters": {"content_type": "pd"},
                            "inputs": [
                                {"name": n, "shape": [1], "datatype": "FP64", "data": [v]}
                                for n, v in (("rooms", 3.0), ("baths", 2.0), ("sqft", 1450.0))
                            ],
                        },
                    },
                },
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "contentMediaType": "application/octet-stream",
                    "description": "Binary tensor extension: the JSON header (its "
                    "length in Inference-Header-Content-Length), then raw tensor "
                    "data.",
                },
            },
        },
    }
    responses = {
        200: {
            "description": "The outputs.",
            "headers": {
                **VERSION_HEADERS,
                "Inference-Header-Content-Length": _header(
                    "With binary outputs: the length of the JSON header.", {"type": "integer"}
                ),
            },
            "content": {
                "application/json": {
                    "schema": _ref("V2InferResponse"),
                    "example": {
                        "model_name": EXAMPLE_MODEL,
                        "model_version": "1",
                        "outputs": [
                            {
                                "name": "predict",
                                "datatype": "FP64",
                                "shape": [1],
                                "data": [412000.0],
                            }
                        ],
                    },
                },
                "application/octet-stream": {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "contentMediaType": "application/octet-stream",
                    },
                },
            },
        }
    }
    return body, responses


class _Builder:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.plugin = MarshmallowPlugin()
        self.spec = APISpec(
            title="modelreg",
            version=_server_version(),
            openapi_version=OPENAPI_VERSION,
            plugins=[self.plugin],
            info={
                "description": "A SQL-backed model registry with multi-model serving. Errors "
                "are `application/problem+json` (RFC 9457), except on the Open Inference "
                'Protocol routes (`/v2/...`), which answer `{"error": "..."}`. Every '
                "operation needs `Authorization: Bearer <token>` unless it is marked public; "
                "roles, each including the ones before it: " + ", ".join(ROLES) + ".",
                "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            },
            tags=TAGS,
        )

    def build(self) -> dict[str, Any]:
        components = self.spec.components
        components.security_scheme(
            SECURITY_SCHEME,
            {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token (`modelreg tokens create` or POST /tokens).",
            },
        )
        for name, schema in MARSHMALLOW_COMPONENTS.items():
            components.schema(name, schema=schema)
        for name, schema in JSON_SCHEMAS.items():
            components.schema(name, copy.deepcopy(schema))
        for name, response in _error_responses().items():
            components.response(name, response)

        seen_ids: set[str] = set()
        for rule in sorted(self.app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
            op = OPERATIONS.get(rule.endpoint)
            if rule.endpoint in EXCLUDED_ENDPOINTS or op is None:
                continue
            view = self.app.view_functions[rule.endpoint]
            operations = {}
            for method in sorted(rule.methods - IGNORED_METHODS):
                operation = self._operation(rule, method, op, view)
                if operation["operationId"] in seen_ids:
                    operation["operationId"] += method.capitalize()
                seen_ids.add(operation["operationId"])
                operations[method.lower()] = operation
            self.spec.path(path=openapi_path(rule.rule), operations=operations)
        document = self.spec.to_dict()
        _apply_details(document["components"]["schemas"])
        return document

    def _operation(self, rule: Any, method: str, op: Op, view: Any) -> dict[str, Any]:
        role = required_role(view, method)
        parameters = [
            {"in": "path", "name": name, "required": True, **copy.deepcopy(PATH_PARAMETERS[name])}
            for name in _rule_arguments(rule.rule)
        ]
        for query in op.query:
            if "x-list-query" in query:
                parameters.extend(self._list_parameters(query["x-list-query"]))
            else:
                parameters.append(copy.deepcopy(query))
        parameters.extend(copy.deepcopy(h) for h in op.headers)

        body = copy.deepcopy(op.body)
        responses = copy.deepcopy(op.responses)
        if op.extra.get("infer"):
            body, responses = _infer_operation()
            parameters.append(copy.deepcopy(V2_HEADER_LENGTH))
        errors = set(op.errors)
        if role is not None:
            errors |= {401, 403}
        prefix = "V2Error" if op.v2 else "Problem"
        for status in sorted(errors):
            responses.setdefault(status, {"$ref": f"#/components/responses/{prefix}{status}"})

        description = op.description
        if role is None:
            access = "Public: no token needed."
        else:
            access = f"Requires the `{role}` role (or higher)."
        operation: dict[str, Any] = {
            "operationId": operation_id(rule.endpoint),
            "tags": [op.tag],
            "summary": op.summary,
            "description": f"{access} {description}".strip(),
            "responses": {str(status): responses[status] for status in sorted(responses)},
            "security": [] if role is None else [{SECURITY_SCHEME: []}],
        }
        if role is not None:
            operation["x-required-role"] = role
        if parameters:
            operation["parameters"] = parameters
        if body is not None:
            operation["requestBody"] = body
        return operation

    def _list_parameters(self, names: list[str]) -> list[dict[str, Any]]:
        converted = self.plugin.converter.schema2parameters(
            schemas.ListQuerySchema(only=names), location="query"
        )
        by_name = {p["name"]: p for p in converted}
        config = self.app.config
        for name, parameter in by_name.items():
            parameter.update(QUERY_DETAILS.get(name, {}))
            if name == "limit":
                parameter["schema"].update(
                    minimum=1,
                    maximum=config.get("MAX_PAGE_SIZE", 500),
                    default=config.get("DEFAULT_PAGE_SIZE", 50),
                )
        return [by_name[name] for name in names]


def _rule_arguments(rule: str) -> list[str]:
    return _RULE_ARGUMENT.findall(rule)


def _apply_details(components: dict[str, Any]) -> None:
    for name, details in RESPONSE_DETAILS.items():
        schema = components[name]
        schema["properties"].update(copy.deepcopy(details))
        schema["required"] = sorted(schema["properties"])
    for name, details in REQUEST_DETAILS.items():
        properties = components[name]["properties"]
        for prop, detail in details.items():
            for keyword, value in detail.items():
                if value is None:
                    properties[prop].pop(keyword, None)
                else:
                    properties[prop][keyword] = copy.deepcopy(value)
    for schema in components.values():
        _dict_lengths(schema)


def _dict_lengths(node: Any) -> None:
    """apispec writes a Length validator on a Dict field as min/maxLength: for an object
    that is min/maxProperties."""
    if isinstance(node, dict):
        if node.get("type") == "object" or "object" in (node.get("type") or ()):
            for old, new in (("minLength", "minProperties"), ("maxLength", "maxProperties")):
                if old in node:
                    node[new] = node.pop(old)
        for value in node.values():
            _dict_lengths(value)
    elif isinstance(node, list):
        for value in node:
            _dict_lengths(value)


def _server_version() -> str:
    from serving.v2 import server_version

    return server_version()


def build_spec(app: Flask) -> dict[str, Any]:
    """A fresh OpenAPI document for `app` (use `get_spec` for the cached one)."""
    return _Builder(app).build()


_build_lock = threading.Lock()


def get_spec(app: Flask) -> dict[str, Any]:
    """The app's document, built on first use and cached in `app.extensions`."""
    cached = app.extensions.get(EXTENSION_KEY)
    if cached is None:
        with _build_lock:
            cached = app.extensions.get(EXTENSION_KEY)
            if cached is None:
                cached = app.extensions[EXTENSION_KEY] = build_spec(app)
    return cached
