"""Serving HTTP API: predictions, and introspection and control of the model cache."""

from __future__ import annotations

import os

import orjson
from flask import Blueprint, Response, request

from registry.access import current_identity, requires
from registry.http import app_services, json_response
from registry.problems import problem
from serving.runtime import Prediction, ServingRuntime

bp = Blueprint("serving", __name__)

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
STALE_HEADERS = [
    ("X-Model-Stale", "true"),
    ("Warning", '110 modelreg "registry unavailable; last known alias mapping"'),
]


def _runtime() -> ServingRuntime:
    return app_services().serving


@bp.post("/models/<name>/<ref>/predict")
@requires("reader")
def predict(name: str, ref: str) -> Response:
    if request.mimetype not in ("application/json", ""):
        return problem(
            415,
            "Unsupported media type",
            "send the body as application/json",
            {"Content-Type": "expected application/json"},
        )
    result = _runtime().predict(name, ref, request.get_data(cache=False))
    return Response(
        encode_prediction(result), headers=model_headers(result), mimetype="application/json"
    )


def encode_prediction(result: Prediction) -> bytes:
    body: dict = {
        "model": result.name,
        "version": result.version,
        "predictions": result.predictions,
    }
    if result.classes is not None:
        body["classes"] = result.classes
    return orjson.dumps(body, option=JSON_OPTIONS)


def model_headers(result: Prediction) -> list[tuple[str, str]]:
    headers = [("X-Model-Version", str(result.version)), ("X-Model-Runtime", result.runtime)]
    return headers + STALE_HEADERS if result.stale else headers


@bp.get("/serving/cache")
def cache_status() -> Response:
    cache = _runtime().cache
    allowed = current_identity().may_use_model
    return json_response(
        {
            "pid": os.getpid(),  # each worker process has its own cache
            "models": [e for e in cache.entries() if allowed(e["name"])],
            "failures": [f for f in cache.failures() if allowed(f["name"])],
            # Process-wide counters, like /metrics: no model names, versions or digests.
            "stats": cache.stats(),
        }
    )


@bp.post("/serving/cache/<name>/<ref>")
@requires("operator")
def warm(name: str, ref: str) -> Response:
    loaded = _runtime().warm(name, ref)
    return json_response(
        {
            "name": loaded.key.name,
            "version": loaded.key.version,
            "sha256": loaded.key.sha256,
            "bytes": loaded.nbytes,
            "load_seconds": loaded.load_seconds,
        }
    )


@bp.delete("/serving/cache/<name>/<ref>")
@requires("operator")
def evict(name: str, ref: str) -> Response:
    return json_response({"evicted": _runtime().evict(name, ref)})
