"""`GET /`: a browser is sent to the UI; any other client gets the API's 404, as before."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, request, url_for

from registry.access import public
from registry.endpoints import undocumented
from registry.errors import NotFound

root_bp = Blueprint("ui_root", __name__)
UI_ROUTE = "the root: a browser is sent to /ui/, any other client gets a 404"


def wants_html() -> bool:
    accept = request.accept_mimetypes
    return accept.best_match(["application/json", "text/html"]) == "text/html" and (
        accept["text/html"] > accept["application/json"]
    )


@root_bp.get("/")
@undocumented(UI_ROUTE)
@public
def root() -> Response:
    if wants_html():
        return redirect(url_for("ui.models"))
    raise NotFound("no resource at /; the API reference is at /docs, the web UI at /ui/")
