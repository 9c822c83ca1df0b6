"""Promote and roll back: a form, its CSRF token, the role, one service call."""

from __future__ import annotations

from flask import Response, redirect, render_template, request, url_for

from registry.access import public
from registry.endpoints import undocumented
from registry.errors import (
    Conflict,
    InvalidInput,
    NotFound,
)
from registry.http import app_services
from registry.names import validate_alias
from registry.policies import service as policy_service
from registry.services import aliases as alias_service
from registry.services import models as model_service
from registry.ui import guard
from registry.ui.blueprint import (
    UI_ROUTE,
    bp,
    viewer_for,
)

# ---- promote and roll back -------------------------------------------------------------------


def _seen_version(raw: str) -> int | None:
    """What the page showed the alias at: a number, or "none" when it did not exist."""
    if raw == "none":
        return None
    if raw.isdigit() and raw.isascii():
        return int(raw)
    raise InvalidInput("the form is incomplete", {"seen": "expected a version number or none"})


@bp.post("/models/<name>/promote")
@undocumented(UI_ROUTE)
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
@undocumented(UI_ROUTE)
@public
def rollback_confirm(name: str, alias: str) -> str:
    viewer = viewer_for(name)
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
@undocumented(UI_ROUTE)
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


@bp.post("/models/<name>/aliases/<alias>/policy/clear")
@undocumented(UI_ROUTE)
@public
def clear_policy(name: str, alias: str) -> Response:
    viewer = guard.current_viewer()
    guard.check_post(viewer)
    guard.require(viewer, "operator", name)
    reason = request.form.get("reason", "").strip()
    if not reason:
        raise InvalidInput("a reason is required", {"reason": "say why, for the audit trail"})
    raw = request.form.get("revision", "")
    if not (raw.isdigit() and raw.isascii()):
        raise InvalidInput("the form is incomplete", {"revision": "expected a revision number"})
    try:
        policy_service.clear_policy(
            app_services().uow,
            name,
            validate_alias(alias),
            actor=viewer.identity.name,
            reason=reason,
            expected_revision=int(raw),
        )
    except Conflict as error:
        raise Conflict(
            f"not cleared: this page was out of date. {error.detail} Reload and decide again.",
            error.errors,
        ) from None
    return redirect(url_for("ui.policy", name=name, alias=alias), code=303)
