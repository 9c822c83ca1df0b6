"""Who is looking at a UI page: the session cookie, its token checked again, and CSRF.

Every UI view is public to the API's bearer check (`access.install`); this guard stands in
for it. It finds the session, re-checks the session's token through the authenticator's
cached path (so a revocation ends the session within the API's bound), and refuses any POST
whose form does not carry the session's CSRF token or that comes from another origin.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Request, g, request

from registry.auth import Identity
from registry.errors import Forbidden, Unauthenticated
from registry.http import app_services
from registry.ui.sessions import SessionRecord, SessionStore

COOKIE = "modelreg_session"
SIGNIN_COOKIE = "modelreg_signin"  # the sign-in form's own CSRF value, before any session


@dataclass(frozen=True, slots=True)
class Viewer:
    identity: Identity
    session_id: str
    csrf_token: str


class SignInRequired(Exception):
    """No live session: the page redirects to the sign-in form (with why, when known)."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


def store() -> SessionStore:
    deps = app_services()
    return SessionStore(deps.uow, deps.config.UI_SESSION_SECONDS)


def is_secure(req: Request) -> bool:
    """HTTPS here, or a proxy in front saying the browser used it."""
    forwarded = req.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return req.is_secure or forwarded == "https"


def same_origin(req: Request) -> bool:
    """Whether a POST may come from this site's own page; the CSRF token is checked apart.

    A browser says where a request comes from in Sec-Fetch-Site; older ones only in Origin.
    Under the API's `Referrer-Policy: no-referrer` a browser sends `Origin: null` even for
    the UI's own forms, so null (or no Origin) proves nothing either way and is left to the
    CSRF token; a real origin must be this host.
    """
    if req.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = req.headers.get("Origin", "null")
    return origin == "null" or urlsplit(origin).netloc == req.host


def current_viewer() -> Viewer:
    viewer: Viewer | None = g.get("ui_viewer")
    if viewer is None:
        viewer = _load_viewer()
        g.ui_viewer, g.identity, g.actor = viewer, viewer.identity, viewer.identity.name
    return viewer


def _load_viewer() -> Viewer:
    deps = app_services()
    session_id = request.cookies.get(COOKIE, "")
    record: SessionRecord | None = store().find(session_id) if session_id else None
    if deps.config.AUTH_DISABLED:
        if record is None:
            raise SignInRequired()
        local = Identity(deps.config.LOCAL_ACTOR, "admin")
        return Viewer(local, session_id, record.csrf_token)
    if record is None:
        raise SignInRequired("your session has ended; sign in again" if session_id else "")
    if record.token_hash is None:  # opened while auth was off: not valid now it is on
        store().end(session_id)
        raise SignInRequired()
    try:
        identity = deps.authenticator.authenticate_digest(record.token_hash)
    except Unauthenticated as error:
        store().end(session_id)
        raise SignInRequired(f"signed out: {error}") from None
    return Viewer(identity, session_id, record.csrf_token)


def check_post(viewer: Viewer) -> None:
    """Refuse a POST without this session's CSRF token or from another site."""
    sent = request.form.get("csrf_token", "")
    if not same_origin(request) or not hmac.compare_digest(sent, viewer.csrf_token):
        raise Forbidden(
            "this form is not from this session (missing or wrong CSRF token); reload the page",
            {"csrf_token": "missing or wrong"},
        )


def require(viewer: Viewer, role: str, model: str | None = None) -> None:
    """The API's role and model-scope rules, for a UI action."""
    identity = viewer.identity
    if not identity.has_role(role):
        raise Forbidden(
            f"this needs the {role} role; token '{identity.name}' is {identity.role}",
            {"role": f"{role} required"},
        )
    if model is not None and not identity.may_use_model(model):
        raise Forbidden(
            f"token '{identity.name}' is not allowed to use model '{model}'",
            {"name": "outside this token's models"},
        )
