"""`GET /openapi.json` and the offline API reference page `GET /docs` (public).

The reference page and its assets ship with the package (`registry/static/docs/`) and are
served from here, so it works without any network access; a Content-Security-Policy keeps
the page from loading anything from elsewhere.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import orjson
from flask import Blueprint, Response, current_app, request

from registry.access import public
from registry.api_docs import OPENAPI_DOCUMENT
from registry.endpoints import endpoint, json_answer, no_body, undocumented
from registry.errors import NotFound
from registry.openapi import EXTENSION_KEY, get_spec

bp = Blueprint("openapi", __name__)

DOCS_DIR = Path(__file__).resolve().parent / "static" / "docs"
DOCS_PAGE = "index.html"
# The only files served under /docs/; anything else is 404 (no directory walking).
DOCS_ASSETS = {
    "docs.js": "text/javascript; charset=utf-8",
    "docs.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_JSON_KEY = EXTENSION_KEY + ".json"
_lock = threading.Lock()


def _document() -> tuple[bytes, str]:
    """The serialized document and its ETag, built once per app."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    cached = app.extensions.get(_JSON_KEY)
    if cached is None:
        with _lock:
            cached = app.extensions.get(_JSON_KEY)
            if cached is None:
                body = orjson.dumps(get_spec(app))
                cached = app.extensions[_JSON_KEY] = (body, hashlib.sha256(body).hexdigest())
    return cached


def _static(filename: str, mimetype: str) -> Response:
    response = Response((DOCS_DIR / filename).read_bytes(), mimetype=mimetype)
    response.headers["Content-Type"] = mimetype
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@endpoint(
    summary="This OpenAPI document",
    tag="ops",
    responses={
        200: json_answer("The OpenAPI 3.1 document.", OPENAPI_DOCUMENT),
        304: no_body("Not modified: If-None-Match matched the document's ETag."),
    },
)
@bp.get("/openapi.json")
@public
def openapi_json() -> Response:
    body, etag = _document()
    response = Response(body, mimetype="application/json")
    response.set_etag(etag)  # no-store, like every answer; the ETag still saves a download
    return response.make_conditional(request)


@endpoint(
    summary="The API reference page",
    tag="ops",
    responses={
        200: json_answer(
            "An HTML page that renders this document (works offline).",
            {"type": "string"},
            media="text/html",
        )
    },
)
@bp.get("/docs")
@public
def docs() -> Response:
    return _static(DOCS_PAGE, "text/html; charset=utf-8")


@undocumented("the reference page's own scripts and styles, not an API operation")
@bp.get("/docs/<path:filename>")
@public
def docs_asset(filename: str) -> Response:
    mimetype = DOCS_ASSETS.get(filename)
    if mimetype is None:
        raise NotFound(f"no documentation asset named {filename[:64]!r}")
    return _static(filename, mimetype)
