"""Who may call what: bearer authentication and role checks for every endpoint.

Every endpoint needs a token unless it is marked public. A view declares the role it needs
with `@requires(...)`; a view that declares nothing needs `reader` for safe methods and
`admin` otherwise, so that a forgotten declaration fails closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g, request

from registry.auth import Authenticator, Identity
from registry.errors import Forbidden, Unauthenticated

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TOKEN_LENGTH = 256


def requires(role: str) -> Callable[[F], F]:
    def mark(view: F) -> F:
        view._required_role = role  # type: ignore[attr-defined]
        return view

    return mark


def public(view: F) -> F:
    view._public = True  # type: ignore[attr-defined]
    return view


def current_identity() -> Identity:
    return g.identity


def needed_role(view: Callable[..., Any], method: str) -> str | None:
    """The role a request to `view` with `method` needs, or None when the view is public.
    A view that declares no role needs reader for safe methods and admin otherwise."""
    if getattr(view, "_public", False):
        return None
    return getattr(view, "_required_role", None) or (
        "reader" if method in SAFE_METHODS else "admin"
    )


def require_role(role: str) -> None:
    """For views whose needed role depends on the body (e.g. archiving in a PATCH)."""
    identity: Identity = g.identity
    if not identity.has_role(role):
        raise Forbidden(
            f"this change needs the {role} role; token '{identity.name}' is {identity.role}",
            {"role": f"{role} required"},
        )


def require_model(name: str) -> None:
    """For views whose model is named in the body rather than the path (POST /models)."""
    identity: Identity = g.identity
    if not identity.may_use_model(name):
        raise Forbidden(
            f"token '{identity.name}' is not allowed to use model '{name}'",
            {"name": "outside this token's models"},
        )


def bearer_secret(header: str) -> str | None:
    """The token in an `Authorization: Bearer <token>` value; None when malformed."""
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or len(secret) > MAX_TOKEN_LENGTH:
        return None
    return secret


def _bearer_secret() -> str:
    header = request.headers.get("Authorization", "")
    if not header:
        raise Unauthenticated("authentication required: send 'Authorization: Bearer <token>'")
    secret = bearer_secret(header)
    if secret is None:
        raise Unauthenticated("malformed Authorization header: expected 'Bearer <token>'")
    return secret


def install(app: Flask, authenticator: Authenticator, *, disabled: bool, local_actor: str) -> None:
    if disabled:
        log.warning(
            "AUTHENTICATION IS DISABLED (AUTH_DISABLED=true): every request acts as "
            "admin '%s'. Use this for local development only.",
            local_actor,
        )
    unrestricted = Identity(local_actor, "admin")

    @app.before_request
    def _authenticate() -> None:
        view = current_app.view_functions.get(request.endpoint or "")
        if view is None or getattr(view, "_public", False):
            return
        if disabled:
            g.identity, g.actor = unrestricted, local_actor
            return
        identity = authenticator.authenticate(_bearer_secret())
        g.identity, g.actor = identity, identity.name
        needed = needed_role(view, request.method)
        if not identity.has_role(needed):
            raise Forbidden(
                f"this endpoint needs the {needed} role; token '{identity.name}' "
                f"is {identity.role}",
                {"role": f"{needed} required"},
            )
        model = (request.view_args or {}).get("name")
        if model is not None:
            require_model(model)
