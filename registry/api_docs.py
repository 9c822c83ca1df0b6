"""Pieces the registry's endpoint declarations share: list envelopes, parameters, examples.

The views declare their operations (`registry.endpoints.endpoint`); what several of them use,
or what is too long to read above a view (the multipart upload, the examples), lives here.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from marshmallow import Schema, fields

from registry import schemas
from registry.endpoints import JsonSchema, binary, header, request_body

EXAMPLE_MODEL = "house-price"
EXAMPLE_SHA256 = "9f2c6b1e0d4a8f3b7c5e2a1d9b8c7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a"
EXAMPLE_TIME = "2025-01-31T09:30:00+00:00"


# ---- response envelopes ----------------------------------------------------------------------


@cache  # one class per envelope, so the document registers it once
def page_of(name: str, key: str, item: type[Schema]) -> type[Schema]:
    """A page of a list endpoint: `{key: [item, ...], "next_cursor": ...}`, named `name`."""
    return Schema.from_dict(
        {
            key: fields.List(fields.Nested(item), required=True),
            "next_cursor": fields.String(
                required=True,
                allow_none=True,
                metadata={"description": "Pass as ?cursor= for more."},
            ),
        },
        name=f"{name}Schema",
    )


@cache
def with_secret(token_out: type[Schema]) -> type[Schema]:
    """A token as POST /tokens answers it: the listing's fields plus the secret, once."""
    return token_out.from_dict(
        {
            "token": fields.String(
                required=True,
                metadata={"description": "The secret: shown this once, stored hashed."},
            )
        },
        name="TokenCreatedSchema",
    )


OPENAPI_DOCUMENT = JsonSchema(
    "OpenAPIDocument",
    {"type": "object", "required": ["openapi", "info", "paths"], "description": "This document."},
)


# ---- headers and parameters ------------------------------------------------------------------

VERSION_HEADERS = {
    "X-Model-Version": header("The version that answered.", {"type": "integer"}),
    "X-Model-Stale": header(
        "`true` when the registry was unreachable and the last known alias mapping was used."
    ),
}
LOCATION = {"Location": header("The new resource.")}
REASON_QUERY = {
    "in": "query",
    "name": "reason",
    "schema": {"type": "string", "maxLength": schemas.MAX_REASON},
    "description": "Why (recorded in the audit trail); used when there is no JSON body.",
}
REASON_BODY = request_body(
    schemas.ReasonSchema,
    required=False,
    description="Optional: why (recorded in the audit trail).",
)
IF_NONE_MATCH = {
    "in": "header",
    "name": "If-None-Match",
    "schema": {"type": "string"},
    "description": "The artifact's sha256 (its ETag) from an earlier download.",
}
ARTIFACT_HEADERS = {
    "ETag": header("The artifact's sha256."),
    "X-Content-SHA256": header("The artifact's sha256."),
    "X-Model-Version": VERSION_HEADERS["X-Model-Version"],
}


# ---- examples --------------------------------------------------------------------------------

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
CREATE_MODEL_EXAMPLES = {
    "create": {
        "value": {
            "name": EXAMPLE_MODEL,
            "description": "Sale price from rooms and floor area",
            "tags": {"team": "pricing"},
        }
    }
}
PROMOTE_EXAMPLES = {
    "production": {
        "summary": "Promote to production",
        "value": {"alias": "production", "reason": "better rmse"},
    },
    "compare-and-set": {
        "summary": "Only if production still points at version 6",
        "value": {"alias": "production", "reason": "better rmse", "expected_version": 6},
    },
}
TOKEN_EXAMPLES = {
    "service": {
        "value": {
            "name": "pricing-service",
            "role": "reader",
            "models": [EXAMPLE_MODEL],
            "expires_in_days": 90,
        }
    }
}


def alias_move_example(version: int, previous: int) -> dict[str, Any]:
    return {
        "name": EXAMPLE_MODEL,
        "alias": "production",
        "version": version,
        "previous_version": previous,
    }


# ---- POST /models/<name>/versions: a multipart upload ---------------------------------------

REGISTER_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["artifact"],
                "properties": {
                    "artifact": binary("The serialized model (joblib, skops or ONNX)."),
                    "metadata": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": schemas.VersionMetadataSchema,
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
}
