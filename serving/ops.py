"""Operational endpoints: liveness, readiness with per-dependency latency."""

from __future__ import annotations

import functools
import time
from typing import Any

from flask import Blueprint, Response
from sqlalchemy import Connection, text

from registry.access import public
from registry.endpoints import endpoint, json_answer
from registry.errors import DependencyUnavailable
from registry.http import AppServices, app_services, json_response
from serving.api_docs import HEALTH, READINESS, RETRY_AFTER
from storage import StorageError

bp = Blueprint("ops", __name__)


@functools.cache
def _known_revisions() -> tuple[str, frozenset[str]]:
    """This code's migration head, and every revision it knows."""
    from alembic.script import ScriptDirectory

    import migrations

    script = ScriptDirectory(str(migrations.HERE))
    return migrations.head_revision(), frozenset(r.revision for r in script.walk_revisions())


def _schema_problem(connection: Connection) -> str | None:
    """Why this server cannot use the database's schema, or None.

    A schema behind this code's head (or none at all: `modelreg db upgrade` never ran) fails
    every request that touches it, so the server is not ready. A revision this code does not
    know is newer: migrations are applied before a rollout, so old servers keep serving.
    """
    from alembic.runtime.migration import MigrationContext

    current = MigrationContext.configure(connection).get_current_revision()
    head, known = _known_revisions()
    if current == head or (current is not None and current not in known):
        return None
    return (
        f"the database schema is at revision {current or 'none'}, this server needs {head}: "
        "run `modelreg db upgrade`"
    )


@endpoint(
    summary="Liveness",
    tag="ops",
    responses={200: json_answer("The process is up.", HEALTH)},
)
@bp.get("/healthz")
@public
def healthz() -> Response:
    return json_response({"status": "ok"})


def _database_problem(uow: Any) -> str | None:
    with uow() as work:
        work.session.execute(text("SELECT 1"))
        return _schema_problem(work.session.connection())


def database_check(deps: AppServices) -> dict[str, Any]:
    """The registry database's readiness, within REGISTRY_LOOKUP_TIMEOUT (one query in
    flight per process, however many probes ask): /readyz and V2's ready share it."""
    started = time.perf_counter()
    try:
        outdated = deps.lookups.call(
            "readyz", lambda: _database_problem(deps.uow), deps.config.REGISTRY_LOOKUP_TIMEOUT
        )
        if outdated is None:
            check: dict[str, Any] = {"status": "ok"}
        else:
            check = {"status": "migration_required", "detail": outdated}
    except DependencyUnavailable as error:
        check = {"status": "unavailable", "detail": error.detail}
    check["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return check


@endpoint(
    summary="Readiness: database and artifact store",
    tag="ops",
    responses={
        200: json_answer("Ready.", READINESS),
        503: json_answer("A dependency is unavailable.", READINESS, headers=RETRY_AFTER),
    },
)
@bp.get("/readyz")
@public
def readyz() -> Response:
    deps = app_services()
    checks: dict[str, dict] = {"database": database_check(deps)}
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
