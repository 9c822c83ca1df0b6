"""Sign in, sign out, and the UI's own static files."""

from __future__ import annotations

import os
from importlib import resources

from flask import Response, redirect, render_template, request, url_for

from registry.access import public
from registry.auth import hash_token
from registry.endpoints import undocumented
from registry.errors import (
    Forbidden,
    NotFound,
    Unauthenticated,
)
from registry.http import app_services
from registry.ui import guard
from registry.ui.blueprint import (
    STATIC_FILES,
    UI_ROUTE,
    bp,
)

# ---- static files and sign-in --------------------------------------------------------------


@bp.get("/static/<filename>")
@undocumented(UI_ROUTE)
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
@undocumented(UI_ROUTE)
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
@undocumented(UI_ROUTE)
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
@undocumented(UI_ROUTE)
@public
def sign_out() -> Response:
    viewer = guard.current_viewer()
    guard.check_post(viewer)
    guard.store().end(viewer.session_id)
    response = redirect(url_for("ui.sign_in", why="signed out"), code=303)
    response.delete_cookie(guard.COOKIE, path="/")
    return response
