"""The UI's blueprint and what its pages share: headers, error pages, paging, access.

Every view is `@public` to the API's bearer check; `guard.current_viewer()` authenticates
the session instead (`viewer_for` adds the role and model scope), and `guard.check_post`
guards every form.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from registry.errors import (
    InvalidInput,
    ModelregError,
    NotFound,
)
from registry.http import app_services
from registry.names import parse_reference
from registry.pagination import make_page
from registry.problems import problem_for, problem_response
from registry.ui import guard
from registry.ui.root import wants_html

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
# Kept out of /openapi.json: the UI is pages for people, the API is documented there.
UI_ROUTE = "a web UI page, not an API operation"


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
def _error_page(error: ModelregError) -> Response | tuple[str, int]:
    """A page for a browser; for any other client the API's problem+json, the same answer."""
    if not wants_html():
        return problem_response(error)
    problem = problem_for(error)
    return render_template("error.html", problem=problem, viewer=g.get("ui_viewer")), problem.status


def page_of(default_size: int = PAGE_SIZE, key_type: type = str) -> Any:
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


def reference(ref: str) -> Any:
    parsed = parse_reference(ref)
    if parsed is None:
        raise NotFound(f"{ref!r} is not a version number, an alias or 'latest'")
    return parsed


def viewer_for(model: str | None = None) -> guard.Viewer:
    viewer = guard.current_viewer()
    guard.require(viewer, "reader", model)
    return viewer
