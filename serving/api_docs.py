"""Schemas and shared pieces of the serving endpoints' declarations (`registry.endpoints`).

The request grammars are read from the code that enforces them: the predict body's payload
keys, methods and split keys from `serving.inputs`, the V2 datatypes and the binary header's
name from `serving.v2_codec`. What a response holds is stated here, since the views build
their answers as plain dicts.
"""

from __future__ import annotations

import functools
from typing import Any

from registry.api_docs import EXAMPLE_MODEL, VERSION_HEADERS
from registry.endpoints import (
    ErrorFormat,
    JsonSchema,
    binary,
    endpoint,
    error_responses,
    header,
)
from serving.inputs import DEFAULT_METHOD, PAYLOAD_KEYS, PREDICT_METHODS, SPLIT_KEYS
from serving.v2_codec import DATATYPES, HEADER_LENGTH


def _object(properties: dict[str, Any], required: Any = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _all_required(properties: dict[str, Any]) -> dict[str, Any]:
    return _object(properties, properties)


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_NUMBER = {"type": "number"}
_TIME = {"type": "string", "format": "date-time"}
# Any JSON value. Every array states its items: client generators drop arrays that do not.
_ANY: dict[str, Any] = {}
_VALUE = {"description": "A feature value: a number, string, boolean or null."}


# ---- native predict --------------------------------------------------------------------------

_ROW = {
    "oneOf": [
        {
            "type": "array",
            "items": _VALUE,
            "description": "Feature values in the model's feature order.",
        },
        {"type": "object", "description": "Feature name -> value."},
    ]
}
_METHOD = {
    "type": "string",
    "enum": list(PREDICT_METHODS),
    "default": DEFAULT_METHOD,
    "description": "The model method to call; predict_proba only for models that have it.",
}
_SPLIT_FIELDS = {
    "columns": {"type": "array", "items": _STRING, "minItems": 1},
    "data": {"type": "array", "items": {"type": "array", "items": _VALUE}, "minItems": 1},
    "index": {"type": "array", "items": _ANY, "description": "Ignored."},
}
# What each payload key holds; keyed by serving.inputs.PAYLOAD_KEYS, so a new key fails here.
_PAYLOADS: dict[str, tuple[dict[str, Any], str]] = {
    "instances": (
        {"type": "array", "minItems": 1, "items": _ROW},
        "Rows: lists of values, or objects keyed by feature name.",
    ),
    "inputs": (
        {
            "oneOf": [
                {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {"type": "array", "items": _VALUE},
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
    "dataframe_split": (
        {
            "type": "object",
            "required": ["data"],
            "properties": {key: _SPLIT_FIELDS[key] for key in SPLIT_KEYS},
            "additionalProperties": False,
        },
        "MLflow's pandas split orientation.",
    ),
    "dataframe_records": (
        {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "MLflow's pandas records orientation.",
    ),
}
# One named component per body shape, so generated clients get a class for each
# (`PredictInstances`, ...) rather than numbered union members.
PREDICT_VARIANTS = {
    key: JsonSchema(
        "Predict" + "".join(word.capitalize() for word in key.split("_")),
        {
            "type": "object",
            "description": _PAYLOADS[key][1],
            "required": [key],
            "properties": {key: _PAYLOADS[key][0], "method": _METHOD},
            "additionalProperties": False,
        },
    )
    for key in PAYLOAD_KEYS
}
PREDICT_REQUEST = JsonSchema(
    "PredictRequest",
    {
        "description": "Exactly one of "
        + ", ".join(f"`{key}`" for key in PAYLOAD_KEYS[:-1])
        + f" or `{PAYLOAD_KEYS[-1]}`, plus an optional `method`.",
        "oneOf": [PREDICT_VARIANTS[key] for key in PAYLOAD_KEYS],
    },
)
PREDICT_RESPONSE = JsonSchema(
    "PredictResponse",
    _object(
        {
            "model": _STRING,
            "version": {"type": "integer", "description": "The version that answered."},
            "predictions": {
                "type": "array",
                "items": _ANY,
                "description": "One entry per input row: a value, or a list of probabilities.",
            },
            "classes": {
                "type": "array",
                "items": _ANY,
                "description": "With predict_proba: the class of each probability column.",
            },
        },
        ["model", "version", "predictions"],
    ),
)
PREDICT_EXAMPLE = {"model": EXAMPLE_MODEL, "version": 1, "predictions": [412000.0]}
PREDICT_EXAMPLES = {
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
            "dataframe_split": {"columns": ["rooms", "baths", "sqft"], "data": [[3, 2, 1450]]}
        },
    },
    "predict_proba": {
        "summary": "Class probabilities",
        "value": {"instances": [[3.0, 2.0, 1450.0]], "method": "predict_proba"},
    },
}
PREDICT_HEADERS = {**VERSION_HEADERS, "X-Model-Runtime": header("The runtime that answered.")}


# ---- the model cache -------------------------------------------------------------------------

CACHED_MODEL = JsonSchema(
    "CachedModel",
    _all_required(
        {
            "name": _STRING,
            "version": _INTEGER,
            "sha256": _STRING,
            "bytes": {"type": "integer", "description": "Estimated memory held."},
            "load_seconds": _NUMBER,
            "loaded_at": _TIME,
            "hits": _INTEGER,
            "last_used_at": _TIME,
        }
    ),
)
CACHE_FAILURE = JsonSchema(
    "CacheFailure",
    _all_required(
        {
            "name": _STRING,
            "version": _INTEGER,
            "sha256": _STRING,
            "error": _STRING,
            "detail": _STRING,
            "at": _TIME,
        }
    ),
)
_CACHE_COUNTERS = (
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
CACHE_STATUS = JsonSchema(
    "CacheStatus",
    _all_required(
        {
            "pid": {
                "type": "integer",
                "description": "The server process that answered: each worker has its own cache.",
            },
            "models": {
                "type": "array",
                "items": CACHED_MODEL,
                "description": "Loaded versions, most recently used first.",
            },
            "failures": {
                "type": "array",
                "items": CACHE_FAILURE,
                "description": "The last load failure per version, newest first.",
            },
            "stats": {"type": "object", "properties": {k: _INTEGER for k in _CACHE_COUNTERS}},
        }
    ),
)
WARM_RESPONSE = JsonSchema(
    "WarmResponse",
    _all_required(
        {
            "name": _STRING,
            "version": _INTEGER,
            "sha256": _STRING,
            "bytes": _INTEGER,
            "load_seconds": _NUMBER,
        }
    ),
)
EVICT_RESPONSE = JsonSchema(
    "EvictResponse",
    _all_required(
        {
            "evicted": {
                "type": "integer",
                "minimum": 0,
                "description": "How many cached versions were dropped.",
            }
        }
    ),
)


# ---- health ----------------------------------------------------------------------------------

HEALTH = JsonSchema("Health", _all_required({"status": {"type": "string", "const": "ok"}}))
READINESS = JsonSchema(
    "Readiness",
    _all_required(
        {
            "status": {"type": "string", "enum": ["ready", "unavailable"]},
            "checks": {
                "type": "object",
                "additionalProperties": _object(
                    {
                        "status": {"type": "string", "enum": ["ok", "unavailable"]},
                        "detail": _STRING,
                        "latency_ms": _NUMBER,
                    },
                    ["status", "latency_ms"],
                ),
            },
        }
    ),
)
RETRY_AFTER = {"Retry-After": header("Seconds.")}


# ---- Open Inference Protocol -----------------------------------------------------------------

V2_ERROR = JsonSchema("V2Error", _all_required({"error": _STRING}))
_V2_ERROR_RESPONSES = error_responses(
    {
        400: "Bad request, including input validation (which the native API answers 422).",
        401: "No token, or an invalid, expired or revoked token.",
        403: "The token's role is too low, or the token is restricted to other models.",
        404: "Unknown model or version.",
        413: "The request body is too large.",
        503: "A dependency is unavailable, or the artifact failed its integrity check.",
    },
    {"application/json": {"schema": V2_ERROR}},
)
V2_ERRORS = ErrorFormat("V2Error", _V2_ERROR_RESPONSES)

# Every V2 operation: tagged v2, errors as {"error": ...}.
v2_endpoint = functools.partial(endpoint, tag="v2", error_format=V2_ERRORS)
DEFAULT_VERSION_NOTE = "Without a version: `production` when the model has it, else `latest`."

V2_SERVER_METADATA = JsonSchema(
    "V2ServerMetadata",
    _all_required(
        {"name": _STRING, "version": _STRING, "extensions": {"type": "array", "items": _STRING}}
    ),
)
V2_LIVE = JsonSchema("V2Live", _all_required({"live": {"type": "boolean"}}))
V2_READY = JsonSchema(
    "V2Ready", _object({"ready": {"type": "boolean"}, "error": _STRING}, ["ready"])
)
_SHAPE = {"type": "array", "items": _INTEGER}
V2_TENSOR_METADATA = JsonSchema(
    "V2TensorMetadata", _all_required({"name": _STRING, "datatype": _STRING, "shape": _SHAPE})
)
V2_MODEL_METADATA = JsonSchema(
    "V2ModelMetadata",
    _object(
        {
            "name": _STRING,
            "versions": {"type": "array", "items": _STRING},
            "platform": _STRING,
            "inputs": {"type": "array", "items": V2_TENSOR_METADATA},
            "outputs": {"type": "array", "items": V2_TENSOR_METADATA},
            "parameters": {
                "type": "object",
                "properties": {
                    "version": _STRING,
                    "feature_names": {"type": "array", "items": _STRING},
                },
            },
        },
        ["name", "versions", "platform", "inputs", "outputs"],
    ),
)
V2_MODEL_READY = JsonSchema(
    "V2ModelReady",
    _object(
        {"name": _STRING, "version": _STRING, "ready": {"type": "boolean"}, "error": _STRING},
        ["name", "version", "ready"],
    ),
)
V2_INFER_REQUEST = JsonSchema(
    "V2InferRequest",
    _object(
        {
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
                "items": _object(
                    {
                        "name": {"type": "string", "minLength": 1},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "datatype": {"type": "string", "enum": list(DATATYPES)},
                        "data": {"description": "Row-major values, flat or nested."},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                        },
                    },
                    ["name", "shape", "datatype"],
                ),
            },
            "outputs": {
                "type": "array",
                "items": _object(
                    {
                        # Outputs are named after the model methods that produce them.
                        "name": {"type": "string", "enum": list(PREDICT_METHODS)},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data": {"type": "boolean"}},
                        },
                    },
                    ["name"],
                ),
            },
        },
        ["inputs"],
    ),
)
V2_INFER_RESPONSE = JsonSchema(
    "V2InferResponse",
    _object(
        {
            "model_name": _STRING,
            "model_version": _STRING,
            "id": {},
            "outputs": {
                "type": "array",
                "items": _object(
                    {
                        "name": _STRING,
                        "datatype": _STRING,
                        "shape": _SHAPE,
                        "data": {"type": "array", "items": _ANY},
                        "parameters": {"type": "object"},
                    },
                    ["name", "datatype", "shape"],
                ),
            },
        },
        ["model_name", "model_version", "outputs"],
    ),
)
V2_REPOSITORY_INDEX_REQUEST = JsonSchema(
    "V2RepositoryIndexRequest",
    {
        "type": "object",
        "properties": {
            "ready": {
                "type": "boolean",
                "default": False,
                "description": "Only models that are loaded.",
            }
        },
    },
)
V2_REPOSITORY_INDEX = JsonSchema(
    "V2RepositoryIndex",
    {
        "type": "array",
        "items": _all_required(
            {
                "name": _STRING,
                "version": _STRING,
                "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                "reason": _STRING,
            }
        ),
    },
)
V2_LOAD_REQUEST = JsonSchema(
    "V2LoadRequest",
    {
        "type": "object",
        "properties": {
            "parameters": {
                "type": "object",
                "description": "`config` and `file:` overrides are not supported.",
            }
        },
    },
)
V2_LOAD_RESPONSE = JsonSchema(
    "V2LoadResponse",
    _all_required(
        {
            "name": _STRING,
            "version": _STRING,
            "state": {"type": "string", "const": "READY"},
            "load_seconds": _NUMBER,
        }
    ),
)
V2_UNLOAD_RESPONSE = JsonSchema(
    "V2UnloadResponse",
    _all_required(
        {"name": _STRING, "version": _STRING, "evicted": {"type": "integer", "minimum": 0}}
    ),
)
_DURATION = _all_required({"count": _INTEGER, "ns": _INTEGER})
V2_MODEL_STATS = JsonSchema(
    "V2ModelStats",
    _all_required(
        {
            "model_stats": {
                "type": "array",
                "items": _all_required(
                    {
                        "name": _STRING,
                        "version": _STRING,
                        "last_inference": {
                            "type": "integer",
                            "description": "Milliseconds since the epoch.",
                        },
                        "inference_count": _INTEGER,
                        "execution_count": _INTEGER,
                        "inference_stats": {"type": "object", "additionalProperties": _DURATION},
                        "batch_stats": {"type": "array", "items": {"type": "object"}},
                    }
                ),
            }
        }
    ),
)

V2_HEADER_LENGTH = {
    "in": "header",
    "name": HEADER_LENGTH,
    "schema": {"type": "integer", "minimum": 1},
    "description": "Binary tensor extension: the length of the JSON header that starts the "
    "body; binary tensor data follows it.",
}
INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": V2_INFER_REQUEST,
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
            "schema": binary(
                f"Binary tensor extension: the JSON header (its length in {HEADER_LENGTH}), "
                "then raw tensor data."
            ),
        },
    },
}
INFER_OK = {
    "description": "The outputs.",
    "headers": {
        **VERSION_HEADERS,
        HEADER_LENGTH: header(
            "With binary outputs: the length of the JSON header.", {"type": "integer"}
        ),
    },
    "content": {
        "application/json": {
            "schema": V2_INFER_RESPONSE,
            "example": {
                "model_name": EXAMPLE_MODEL,
                "model_version": "1",
                "outputs": [
                    {"name": "predict", "datatype": "FP64", "shape": [1], "data": [412000.0]}
                ],
            },
        },
        "application/octet-stream": {"schema": binary()},
    },
}
INFER_ERRORS = (400, 401, 403, 404, 413, 503)


# ---- MLflow scoring protocol (serving/invocations.py) ----------------------------------------

MLFLOW_ERROR = JsonSchema(
    "MlflowError",
    _object(
        {
            "error_code": _STRING,
            "message": _STRING,
            "errors": {"type": "object", "description": "Each invalid field and why."},
        },
        ["error_code", "message"],
    ),
)
MLFLOW_ERRORS = ErrorFormat(
    "MlflowError",
    error_responses(
        {
            400: "Bad request, including input validation (`INVALID_PARAMETER_VALUE`).",
            401: "No token, or an invalid, expired or revoked token.",
            403: "The token's role is too low, or the token is restricted to other models.",
            404: "Unknown model or version, or no INVOCATIONS_MODEL for `/invocations`.",
            413: "The request body is too large.",
            415: "Send application/json or text/csv.",
            503: "A dependency is unavailable, or the artifact failed its integrity check.",
        },
        {"application/json": {"schema": MLFLOW_ERROR}},
    ),
)
mlflow_endpoint = functools.partial(endpoint, tag="mlflow", error_format=MLFLOW_ERRORS)
INVOCATIONS_REQUEST = JsonSchema(
    "InvocationsRequest",
    {
        "type": "object",
        "description": "MLflow's scoring payload: exactly one of `dataframe_split`, "
        "`dataframe_records`, `instances`, `inputs`, and an optional `params` object (accepted "
        "and ignored: scikit-learn's predict takes no parameters). A `text/csv` body (header "
        "row first) is accepted too.",
    },
)
INVOCATIONS_RESPONSE = JsonSchema(
    "InvocationsResponse",
    _object(
        {"predictions": {"type": "array", "description": "One entry per row."}}, ["predictions"]
    ),
)
INVOCATIONS_ERRORS = (400, 401, 403, 404, 413, 415, 503)
PING_RESPONSE = JsonSchema("MlflowPing", {"type": "string", "description": "A newline."})


# ---- KServe V1 / TF Serving REST (serving/v1.py) ---------------------------------------------

v1_endpoint = functools.partial(endpoint, tag="v1", error_format=V2_ERRORS)
V1_PREDICT_REQUEST = JsonSchema(
    "V1PredictRequest",
    _object(
        {
            "instances": {"type": "array", "description": "Rows (lists, or objects by name)."},
            "inputs": {"description": "TF Serving's columnar form: {feature: [values]}."},
            "signature_name": _STRING,
        }
    ),
)
V1_PREDICT_RESPONSE = JsonSchema(
    "V1PredictResponse",
    _object(
        {
            "predictions": {"type": "array", "description": "For `instances`."},
            "outputs": {"type": "array", "description": "For `inputs` (TF Serving)."},
        }
    ),
)
V1_MODEL_STATUS = JsonSchema(
    "V1ModelStatus",
    _object(
        {
            "name": _STRING,
            "ready": {"type": "boolean"},
            "model_version_status": {"type": "array", "items": {"type": "object"}},
        },
        ["name", "ready", "model_version_status"],
    ),
)
