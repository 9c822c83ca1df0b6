"""Serving HTTP API: predictions, and introspection and control of the model cache."""

from __future__ import annotations

import os

from flask import Blueprint, Response, request

from registry.access import current_identity, requires
from registry.endpoints import endpoint, json_answer, request_body
from registry.http import app_services, json_response
from registry.problems import to_response
from serving.api_docs import (
    CACHE_STATUS,
    EVICT_RESPONSE,
    PREDICT_EXAMPLE,
    PREDICT_EXAMPLES,
    PREDICT_HEADERS,
    PREDICT_REQUEST,
    PREDICT_RESPONSE,
    WARM_RESPONSE,
)
from serving.dataplane import DataPlane
from serving.native import check_media_type, predict_answer
from serving.unit_keys import from_environ

bp = Blueprint("serving", __name__)


def _dataplane() -> DataPlane:
    return app_services().dataplane


@endpoint(
    summary="Predict with a version or an alias",
    tag="serving",
    body=request_body(PREDICT_REQUEST, examples=PREDICT_EXAMPLES),
    responses={
        200: json_answer(
            "The predictions, and which version made them.",
            PREDICT_RESPONSE,
            example=PREDICT_EXAMPLE,
            headers=PREDICT_HEADERS,
        )
    },
    errors=(400, 401, 403, 404, 413, 415, 422, 503),
    description="`ref` is a version number (pinned), an alias (follows promotions) or "
    "`latest`. 422 names the rows and fields that are wrong.",
)
@bp.post("/models/<name>/<ref>/predict")
@requires("reader")
def predict(name: str, ref: str) -> Response:
    check_media_type(request.mimetype)
    body = request.get_data(cache=False)
    answer = predict_answer(
        _dataplane(),
        name,
        ref,
        body,
        content_encoding=request.headers.get("Content-Encoding"),
        max_body_bytes=app_services().config.MAX_PREDICT_BODY_BYTES,
        unit=from_environ(request.environ, body),
    )
    return to_response(answer)


@endpoint(
    summary="What the model cache holds",
    tag="serving",
    responses={
        200: json_answer("Loaded versions, recent load failures and counters.", CACHE_STATUS)
    },
    errors=(401, 403, 503),
    description="Versions and failures of the models the token may use; the counters are the "
    "process's own.",
)
@bp.get("/serving/cache")
def cache_status() -> Response:
    dataplane = _dataplane()
    allowed = current_identity().may_use_model
    return json_response(
        {
            "pid": os.getpid(),  # each worker process has its own cache
            "models": [e for e in dataplane.cached_models() if allowed(e["name"])],
            "failures": [f for f in dataplane.load_failures() if allowed(f["name"])],
            # Process-wide counters, like /metrics: no model names, versions or digests.
            "stats": dataplane.cache_stats(),
        }
    )


@endpoint(
    summary="Load a version into the cache",
    tag="serving",
    responses={200: json_answer("The loaded version.", WARM_RESPONSE)},
    errors=(401, 403, 404, 422, 503),
)
@bp.post("/serving/cache/<name>/<ref>")
@requires("operator")
def warm(name: str, ref: str) -> Response:
    _, loaded = _dataplane().warm(name, ref)
    return json_response(
        {
            "name": loaded.key.name,
            "version": loaded.key.version,
            "sha256": loaded.key.sha256,
            "bytes": loaded.nbytes,
            "load_seconds": loaded.load_seconds,
        }
    )


@endpoint(
    summary="Evict a version from the cache",
    tag="serving",
    responses={200: json_answer("How many were evicted.", EVICT_RESPONSE)},
    errors=(401, 403, 404, 503),
)
@bp.delete("/serving/cache/<name>/<ref>")
@requires("operator")
def evict(name: str, ref: str) -> Response:
    return json_response({"evicted": _dataplane().evict(name, ref)})
