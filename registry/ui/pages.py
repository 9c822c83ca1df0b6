"""The reading pages: models, a model, a version, a comparison, this process."""

from __future__ import annotations

import os
import time
from datetime import date
from typing import Any

from flask import Response, render_template, request, send_file
from sqlalchemy import text

from registry.access import public
from registry.endpoints import undocumented
from registry.errors import (
    DependencyUnavailable,
    InvalidInput,
    NotFound,
)
from registry.http import app_services
from registry.monitoring import service as monitoring_service
from registry.pagination import make_page
from registry.services import events as event_service
from registry.services import models as model_service
from registry.services import versions as version_service
from registry.ui.blueprint import (
    MAX_COMPARED,
    PAGE_SIZE,
    UI_ROUTE,
    bp,
    page_of,
    reference,
    viewer_for,
)
from registry.ui.compare import compare_versions
from registry.ui.history import read_alias_steps, timelines, version_on
from registry.views import FILE_EXTENSIONS
from storage import StorageError

# ---- models --------------------------------------------------------------------------------


@bp.get("/")
@undocumented(UI_ROUTE)
@public
def models() -> str:
    viewer = viewer_for()
    query = request.args.get("q", "").strip()
    tag_filter = request.args.get("tag", "").strip()
    tags = []
    if tag_filter:
        key, sep, value = tag_filter.partition(":")
        tags.append((key, value if sep else None))
    result = model_service.list_models(
        app_services().uow,
        page_of(),
        search=query or None,
        tags=tags,
        only=viewer.identity.models,
    )
    return render_template("models.html", viewer=viewer, result=result, q=query, tag=tag_filter)


@bp.get("/models/<name>")
@undocumented(UI_ROUTE)
@public
def model(name: str) -> str:
    viewer = viewer_for(name)
    deps = app_services()
    record = model_service.get_model(deps.uow, name)
    versions = version_service.list_versions(deps.uow, name, page_of(key_type=int))
    events = event_service.list_events(
        deps.uow, name, _events_page(), type_=request.args.get("type") or None
    )
    steps = read_alias_steps(deps.uow, name, deps.config.MAX_PAGE_SIZE)
    day_text = request.args.get("on", "")
    answer = None
    if day_text:
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            raise InvalidInput("invalid date", {"on": "expected YYYY-MM-DD"}) from None
        asked = request.args.get("alias") or "production"
        answer = {"alias": asked, "day": day, "version": version_on(steps, asked, day)}
    alias_names = sorted({*record.aliases, *(s.alias for s in steps), "production"})
    return render_template(
        "model.html",
        viewer=viewer,
        model=record,
        versions=versions,
        events=events,
        timelines=timelines(steps),
        alias_names=alias_names,
        answer=answer,
        day_text=day_text,
        may_promote=viewer.identity.has_role("operator"),
        message=request.args.get("done", ""),
    )


def _events_page() -> Any:
    config = app_services().config
    cursor = request.args.get("events_cursor") or None
    return make_page(None, cursor, default=PAGE_SIZE, maximum=config.MAX_PAGE_SIZE, key_type=int)


@bp.get("/models/<name>/versions/<ref>")
@undocumented(UI_ROUTE)
@public
def version(name: str, ref: str) -> str:
    viewer = viewer_for(name)
    deps = app_services()
    record = version_service.get_version(deps.uow, name, reference(ref))
    current = model_service.get_model(deps.uow, name).aliases
    try:
        profile = monitoring_service.get_profile(deps.uow, name, reference(str(record.version)))
    except NotFound:  # registered without a reference: nothing to profile
        profile = None
    return render_template(
        "version.html",
        viewer=viewer,
        v=record,
        profile=profile,
        aliases=current,
        may_promote=viewer.identity.has_role("operator"),
    )


@bp.get("/models/<name>/compare")
@undocumented(UI_ROUTE)
@public
def compare(name: str) -> str:
    viewer = viewer_for(name)
    deps = app_services()
    wanted = request.args.getlist("v")
    if not 2 <= len(wanted) <= MAX_COMPARED:
        raise InvalidInput(
            "choose versions to compare", {"v": f"between 2 and {MAX_COMPARED} versions"}
        )
    records = [version_service.get_version(deps.uow, name, reference(v)) for v in wanted]
    records.sort(key=lambda record: record.version)  # oldest first, whatever the form's order
    return render_template(
        "compare.html", viewer=viewer, name=name, records=records, rows=compare_versions(records)
    )


@bp.get("/models/<name>/versions/<int:number>/artifact")
@undocumented(UI_ROUTE)
@public
def artifact(name: str, number: int) -> Response:
    viewer_for(name)
    deps = app_services()
    record, stream, _ = version_service.open_artifact(
        deps.uow, deps.store, name, reference(str(number))
    )
    response = send_file(
        stream,
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=f"{record.name}-v{record.version}.{FILE_EXTENSIONS[record.format]}",
    )
    response.headers["Cache-Control"] = "no-store"
    response.content_length = record.size
    return response


# ---- this process ---------------------------------------------------------------------------


@bp.get("/processes")
@undocumented(UI_ROUTE)
@public
def processes() -> str:
    viewer = viewer_for()
    deps = app_services()
    checks: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    try:
        deps.lookups.call(
            "ui-ready",
            lambda: _select_one(deps.uow),
            deps.config.REGISTRY_LOOKUP_TIMEOUT,
        )
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
    only = viewer.identity.models
    cache = deps.serving.cache
    entries = [e for e in cache.entries() if only is None or e["name"] in only]
    failures = [e for e in cache.failures() if only is None or e["name"] in only]
    return render_template(
        "processes.html",
        viewer=viewer,
        pid=os.getpid(),
        checks=checks,
        entries=entries,
        failures=failures,
        stats=cache.stats() if only is None else None,
    )


def _select_one(uow: Any) -> None:
    with uow() as work:
        work.session.execute(text("SELECT 1"))
