"""Operational endpoints: liveness, readiness with per-dependency latency."""

from __future__ import annotations

import time

from flask import Blueprint, Response
from sqlalchemy import text

from registry.access import public
from registry.errors import DependencyUnavailable
from registry.http import json_response, wiring
from storage import StorageError

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@public
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
@public
def readyz() -> Response:
    deps = wiring()
    checks: dict[str, dict] = {}
    started = time.perf_counter()
    try:
        with deps.uow() as work:
            work.session.execute(text("SELECT 1"))
        checks["database"] = {"status": "ok"}
    except DependencyUnavailable as error:
        checks["database"] = {"status": "unavailable", "detail": error.detail}
    checks["database"]["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    started = time.perf_counter()
    try:
        deps.store.check()
        checks["storage"] = {"status": "ok"}
    except StorageError as error:
        checks["storage"] = {"status": "unavailable", "detail": str(error)}
    checks["storage"]["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    ready = all(check["status"] == "ok" for check in checks.values())
    return json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )
