"""The UI's pages: parse the query or form, authorize, call one registry service, render.

Every view is `@public` to the API's bearer check; `guard.current_viewer()` authenticates
the session instead, and `guard.check_post` guards every form.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, g, redirect, render_template, request, send_file, url_for
from sqlalchemy import text
from werkzeug.datastructures import MultiDict

from registry.access import public
from registry.auth import hash_token
from registry.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    ModelregError,
    NotFound,
    Unauthenticated,
)
from registry.http import app_services
from registry.monitoring import service as monitoring_service
from registry.names import parse_reference, validate_alias
from registry.pagination import make_page
from registry.policies import service as policy_service
from registry.problems import problem_for
from registry.services import aliases as alias_service
from registry.services import events as event_service
from registry.services import models as model_service
from registry.services import versions as version_service
from registry.ui import guard
from registry.ui.compare import compare_versions
from registry.ui.history import read_alias_steps, timelines, version_on
from registry.views import FILE_EXTENSIONS
from storage import StorageError

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates")

STATIC_FILES = {
    "ui.css": "text/css; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
    "htmx.min.js": "text/javascript; charset=utf-8",
    "uplot.min.js": "text/javascript; charset=utf-8",
    "uplot.min.css": "text/css; charset=utf-8",
}
# Everything the pages load comes from here: no inline script, no other origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_SIZE = 25


@bp.app_template_filter("update_query")
def update_query(args: Any, key: str, value: str) -> str:
    """The current query string with one parameter replaced (a next-page link)."""
    merged = MultiDict(args)
    merged.setlist(key, [value])
    return urlencode(list(merged.items(multi=True)))


MAX_COMPARED = 6


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"  # pages show one session's view
    return response


@bp.errorhandler(guard.SignInRequired)
def _sign_in_first(error: guard.SignInRequired) -> Response:
    target = request.full_path if request.method == "GET" else url_for("ui.models")
    return redirect(url_for("ui.sign_in", next=target.rstrip("?"), why=error.why or None))


@bp.errorhandler(ModelregError)
def _error_page(error: ModelregError) -> tuple[str, int]:
    problem = problem_for(error)
    return render_template("error.html", problem=problem, viewer=g.get("ui_viewer")), problem.status


def _page(default_size: int = PAGE_SIZE, key_type: type = str) -> Any:
    config = app_services().config
    raw = request.args.get("limit")
    limit = int(raw) if raw and raw.isdigit() else None
    if raw and limit is None:
        raise InvalidInput("invalid limit", {"limit": "must be a whole number"})
    return make_page(
        limit,
        request.args.get("cursor") or None,
        default=default_size,
        maximum=config.MAX_PAGE_SIZE,
        key_type=key_type,
    )


def _reference(ref: str) -> Any:
    parsed = parse_reference(ref)
    if parsed is None:
        raise NotFound(f"{ref!r} is not a version number, an alias or 'latest'")
    return parsed


def _viewer_for(model: str | None = None) -> guard.Viewer:
    viewer = guard.current_viewer()
    guard.require(viewer, "reader", model)
    return viewer


# ---- static files and sign-in --------------------------------------------------------------


@bp.get("/static/<filename>")
@public
def static(filename: str) -> Response:
    media = STATIC_FILES.get(filename)
    if media is None:
        raise NotFound(f"no UI file '{filename}'")
    body = resources.files("registry.ui").joinpath("static", filename).read_bytes()
    response = Response(body, mimetype=media.split(";")[0])
    response.headers["Content-Type"] = media
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


def _safe_next(target: str | None) -> str:
    """Only a path inside the UI: never another site (an open redirect)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("ui.models")


def _set_session_cookie(response: Response, session_id: str, max_age: int) -> None:
    response.set_cookie(
        guard.COOKIE,
        session_id,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=guard.is_secure(request),
    )


@bp.get("/signin")
@public
def sign_in() -> Response:
    deps = app_services()
    nxt = _safe_next(request.args.get("next"))
    if deps.config.AUTH_DISABLED:  # nothing to prove: open a session and go on
        session_id, _ = guard.store().open(None)
        response = redirect(nxt)
        _set_session_cookie(response, session_id, deps.config.UI_SESSION_SECONDS)
        return response
    form_token = os.urandom(24).hex()
    response = Response(
        render_template(
            "signin.html",
            viewer=None,
            next=nxt,
            why=request.args.get("why", ""),
            form_token=form_token,
            error=None,
        ),
        mimetype="text/html",
    )
    response.set_cookie(
        guard.SIGNIN_COOKIE,
        form_token,
        max_age=3600,
        path="/ui/",
        httponly=True,
        samesite="Strict",
        secure=guard.is_secure(request),
    )
    return response


@bp.post("/signin")
@public
def sign_in_post() -> Response | tuple[str, int]:
    deps = app_services()
    nxt = _safe_next(request.form.get("next"))
    sent = request.form.get("csrf_token", "")
    expected = request.cookies.get(guard.SIGNIN_COOKIE, "")
    if not expected or sent != expected or not guard.same_origin(request):
        raise Forbidden(
            "this sign-in form is not from this site or has expired; reload it",
            {"csrf_token": "missing or wrong"},
        )
    secret = request.form.get("token", "").strip()
    try:
        if not secret or len(secret) > 256:
            raise Unauthenticated("enter a token")
        deps.authenticator.authenticate(secret)
    except Unauthenticated as error:
        page = render_template(
            "signin.html", viewer=None, next=nxt, why="", form_token=expected, error=str(error)
        )
        return page, 401
    session_id, _ = guard.store().open(hash_token(secret))
    response = redirect(nxt, code=303)
    _set_session_cookie(response, session_id, deps.config.UI_SESSION_SECONDS)
    response.delete_cookie(guard.SIGNIN_COOKIE, path="/ui/")
    return response


@bp.post("/signout")
@public
def sign_out() -> Response:
    viewer = guard.current_viewer()
    guard.check_post(viewer)
    guard.store().end(viewer.session_id)
    response = redirect(url_for("ui.sign_in", why="signed out"), code=303)
    response.delete_cookie(guard.COOKIE, path="/")
    return response


# ---- models --------------------------------------------------------------------------------


@bp.get("/")
@public
def models() -> str:
    viewer = _viewer_for()
    query = request.args.get("q", "").strip()
    tag_filter = request.args.get("tag", "").strip()
    tags = []
    if tag_filter:
        key, sep, value = tag_filter.partition(":")
        tags.append((key, value if sep else None))
    result = model_service.list_models(
        app_services().uow,
        _page(),
        search=query or None,
        tags=tags,
        only=viewer.identity.models,
    )
    return render_template("models.html", viewer=viewer, result=result, q=query, tag=tag_filter)


@bp.get("/models/<name>")
@public
def model(name: str) -> str:
    viewer = _viewer_for(name)
    deps = app_services()
    record = model_service.get_model(deps.uow, name)
    versions = version_service.list_versions(deps.uow, name, _page(key_type=int))
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
@public
def version(name: str, ref: str) -> str:
    viewer = _viewer_for(name)
    deps = app_services()
    record = version_service.get_version(deps.uow, name, _reference(ref))
    current = model_service.get_model(deps.uow, name).aliases
    try:
        profile = monitoring_service.get_profile(deps.uow, name, _reference(str(record.version)))
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
@public
def compare(name: str) -> str:
    viewer = _viewer_for(name)
    deps = app_services()
    wanted = request.args.getlist("v")
    if not 2 <= len(wanted) <= MAX_COMPARED:
        raise InvalidInput(
            "choose versions to compare", {"v": f"between 2 and {MAX_COMPARED} versions"}
        )
    records = [version_service.get_version(deps.uow, name, _reference(v)) for v in wanted]
    records.sort(key=lambda record: record.version)  # oldest first, whatever the form's order
    return render_template(
        "compare.html", viewer=viewer, name=name, records=records, rows=compare_versions(records)
    )


@bp.get("/models/<name>/versions/<int:number>/artifact")
@public
def artifact(name: str, number: int) -> Response:
    _viewer_for(name)
    deps = app_services()
    record, stream, _ = version_service.open_artifact(
        deps.uow, deps.store, name, _reference(str(number))
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


# ---- promote and roll back -------------------------------------------------------------------


def _seen_version(raw: str) -> int | None:
    """What the page showed the alias at: a number, or "none" when it did not exist."""
    if raw == "none":
        return None
    if raw.isdigit() and raw.isascii():
        return int(raw)
    raise InvalidInput("the form is incomplete", {"seen": "expected a version number or none"})


@bp.post("/models/<name>/promote")
@public
def promote(name: str) -> Response:
    viewer = guard.current_viewer()
    guard.check_post(viewer)
    guard.require(viewer, "operator", name)
    deps = app_services()
    raw_version = request.form.get("version", "")
    if not (raw_version.isdigit() and raw_version.isascii()):
        raise InvalidInput("choose a version", {"version": "expected a version number"})
    number = int(raw_version)
    alias = validate_alias(request.form.get("alias", "").strip() or "production")
    reason = request.form.get("reason", "").strip()
    if not reason:
        raise InvalidInput("a reason is required", {"reason": "say why, for the audit trail"})
    if len(reason) > 1000:
        raise InvalidInput("reason too long", {"reason": "at most 1000 characters"})
    seen = _seen_version(request.form.get(f"seen_{alias}", request.form.get("seen", "none")))
    try:
        move = alias_service.promote_version(
            deps.uow,
            name,
            number,
            alias=alias,
            reason=reason,
            expected_version=seen,
            actor=viewer.identity.name,
            check=deps.check_version,
            example_required_for=alias_service.example_required_for(
                deps.config.REQUIRE_INPUT_EXAMPLE_FOR
            ),
        )
    except Conflict as error:
        raise Conflict(
            f"not promoted: this page was out of date. {error.detail} Reload the page to see "
            "the alias as it is now, then decide again.",
            error.errors,
        ) from None
    done = f"{alias} now points at version {move.version}"
    return redirect(url_for("ui.model", name=name, done=done), code=303)


@bp.get("/models/<name>/aliases/<alias>/rollback")
@public
def rollback_confirm(name: str, alias: str) -> str:
    viewer = _viewer_for(name)
    guard.require(viewer, "operator", name)
    deps = app_services()
    record = model_service.get_model(deps.uow, name)
    if alias not in record.aliases:
        raise NotFound(f"alias '{alias}' of '{name}' not found")
    previous = alias_service.rollback_target(deps.uow, name, alias)
    return render_template(
        "rollback.html",
        viewer=viewer,
        name=name,
        alias=alias,
        current=record.aliases[alias],
        previous=previous,
    )


@bp.post("/models/<name>/aliases/<alias>/rollback")
@public
def rollback(name: str, alias: str) -> Response:
    viewer = guard.current_viewer()
    guard.check_post(viewer)
    guard.require(viewer, "operator", name)
    deps = app_services()
    reason = request.form.get("reason", "").strip()
    if not reason:
        raise InvalidInput("a reason is required", {"reason": "say why, for the audit trail"})
    seen = _seen_version(request.form.get("seen", ""))
    try:
        move = alias_service.rollback_alias(
            deps.uow,
            name,
            alias,
            reason=reason,
            actor=viewer.identity.name,
            check=deps.check_version,
            expected_version=seen,
        )
    except Conflict as error:
        raise Conflict(
            f"not rolled back: this page was out of date or there is nothing to go back to. "
            f"{error.detail} Reload the page and decide again.",
            error.errors,
        ) from None
    done = f"{alias} rolled back to version {move.version}"
    return redirect(url_for("ui.model", name=name, done=done), code=303)


# ---- this process ---------------------------------------------------------------------------


@bp.get("/processes")
@public
def processes() -> str:
    viewer = _viewer_for()
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


# ---- traffic policy and monitoring -----------------------------------------------------------


@bp.get("/models/<name>/aliases/<alias>/policy")
@public
def policy(name: str, alias: str) -> str:
    viewer = _viewer_for(name)
    deps = app_services()
    current = policy_service.get_policy(deps.uow, name, validate_alias(alias))
    stats = None
    if current["state"] == "active":
        resolution = deps.dataplane.resolve(name, alias)
        stats = deps.dataplane.policy_stats.view(name, resolution.policy)
    return render_template(
        "policy.html",
        viewer=viewer,
        name=name,
        alias=alias,
        policy=current,
        stats=stats,
        pid=os.getpid(),
    )


@bp.get("/models/<name>/versions/<int:number>/monitoring")
@public
def monitoring(name: str, number: int) -> str:
    viewer = _viewer_for(name)
    deps = app_services()
    default_window = deps.config.MONITOR_WINDOW_SECONDS
    raw = request.args.get("window", "")
    if raw and not (raw.isdigit() and raw.isascii() and int(raw) > 0):
        raise InvalidInput("invalid window", {"window": "a whole number of seconds"})
    since = None
    if request.args.get("since"):
        try:
            since = datetime.fromtimestamp(float(request.args["since"]), UTC)
        except (ValueError, OverflowError, OSError):
            raise InvalidInput("invalid since", {"since": "epoch seconds"}) from None
    report = monitoring_service.monitoring_report(
        deps.uow,
        name,
        _reference(str(number)),
        since=since,
        window=int(raw) if raw else None,
        default_window=default_window,
    )
    features = sorted({f for w in report["windows"] for f in w["features"]})
    chart = {  # what ui.js plots: PSI per feature over the windows (the table has it all)
        "window": report["window_seconds"],
        "x": [datetime.fromisoformat(w["start"]).timestamp() for w in report["windows"]],
        "series": {
            f: [(w["features"].get(f) or {}).get("psi") for w in report["windows"]]
            for f in features
        },
    }
    return render_template(
        "monitoring.html", viewer=viewer, report=report, features=features, chart=chart
    )
