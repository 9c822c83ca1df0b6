"""Serving HTTP API: predictions, and introspection and control of the model cache."""

from __future__ import annotations

import os

from flask import Blueprint, Response, request

from registry.access import current_identity, requires
from registry.http import app_services, json_response
from registry.problems import to_response
from serving.dataplane import DataPlane
from serving.native import check_media_type, predict_answer

bp = Blueprint("serving", __name__)


def _dataplane() -> DataPlane:
    return app_services().dataplane


@bp.post("/models/<name>/<ref>/predict")
@requires("reader")
def predict(name: str, ref: str) -> Response:
    check_media_type(request.mimetype)
    body = request.get_data(cache=False)
    return to_response(predict_answer(_dataplane(), name, ref, body))


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


@bp.delete("/serving/cache/<name>/<ref>")
@requires("operator")
def evict(name: str, ref: str) -> Response:
    return json_response({"evicted": _dataplane().evict(name, ref)})
