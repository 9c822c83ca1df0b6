"""Small helpers shared by the HTTP views: JSON responses, the app's services, the caller."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from flask import Response, current_app, g, request

from registry.errors import InvalidInput, NotFound, UnsupportedMediaType
from registry.schemas import parse_json
from registry.unit_of_work import UnitOfWorkFactory
from storage import ArtifactStore

if TYPE_CHECKING:  # the registry never imports the serving stack at run time
    from sqlalchemy import Engine

    from config import Config
    from registry.answers import AnswerFinisher
    from registry.auth import Authenticator
    from registry.bounded import BoundedLookups
    from registry.records import VersionRecord
    from registry.webhooks.dispatcher import Dispatcher
    from serving.dataplane import DataPlane
    from serving.inspection import Inspection
    from serving.metrics import Metrics
    from serving.runtime import ServingRuntime

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True, slots=True)
class AppServices:
    """What the composition root (manage.create_app) builds once per app and the views share."""

    config: Config
    engine: Engine
    uow: UnitOfWorkFactory
    store: ArtifactStore
    inspect_artifact: Callable[[str, str], Inspection]
    check_version: Callable[[VersionRecord], Mapping[str, Any] | None]
    authenticator: Authenticator
    lookups: BoundedLookups
    metrics: Metrics
    serving: ServingRuntime  # the resolver, loader and cache behind the data plane
    dataplane: DataPlane  # what every serving protocol goes through
    finisher: AnswerFinisher
    webhooks: Dispatcher  # sends the webhook outbox (its thread runs if WEBHOOK_DISPATCH)


EXTENSION_KEY = "modelreg"


def app_services() -> AppServices:
    """The current app's services (inside a request or an app context)."""
    return current_app.extensions[EXTENSION_KEY]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(
        orjson.dumps(body, option=JSON_OPTIONS), status=status, mimetype="application/json"
    )
    if headers:
        response.headers.update(headers)
    return response


def json_body(*, required: bool = True) -> Any:
    """The request's JSON object; an empty body is `{}` when not required."""
    raw = request.get_data(cache=False)
    if not raw:
        if required:
            raise UnsupportedMediaType(
                "a JSON body is required", {"Content-Type": "expected application/json"}
            )
        return {}
    if request.mimetype not in ("application/json", "") and not request.mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected application/json, got {request.mimetype}",
            {"Content-Type": "expected application/json"},
        )
    return parse_json(raw)


def current_actor() -> str:
    """Who is making the request, as the audit trail records it."""
    return g.get("actor") or "anonymous"


def reject_malformed_paths() -> None:
    """Refuse at the edge what no resource can have.

    NUL can be neither stored (PostgreSQL text refuses it) nor part of any valid name: in the
    path the resource cannot exist, in the query it is invalid. An empty path segment (`//`)
    names nothing either; werkzeug would ignore leading ones and redirect the others to an
    absolute URL built from the client's Host header, so they are not found instead.
    """
    if "\x00" in request.path:
        raise NotFound("no resource has a NUL character in its path")
    if "//" in request.environ.get("PATH_INFO", ""):
        raise NotFound("no resource has an empty segment ('//') in its path")
    for key, value in request.args.items(multi=True):
        if "\x00" in key or "\x00" in value:
            raise InvalidInput(
                "NUL characters are not allowed", {key.replace("\x00", ""): "contains NUL"}
            )
