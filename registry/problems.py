"""The one mapping from errors to `application/problem+json` responses (RFC 9457)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from registry import errors
from storage import ArtifactNotFound, ArtifactTooLarge, StorageError

log = logging.getLogger("modelreg.errors")

PROBLEM_JSON = "application/problem+json"

STATUS_BY_ERROR: dict[type[errors.ModelregError], int] = {
    errors.MalformedRequest: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Conflict: 409,
    errors.TooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.InvalidInput: 422,
    errors.ArtifactIntegrityError: 503,
    errors.DependencyUnavailable: 503,
}


def status_for(error: errors.ModelregError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def _slug(title: str) -> str:
    return "-".join(title.lower().replace("+", " ").split())


def problem(
    status: int,
    title: str,
    detail: str,
    errors_: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"urn:modelreg:problem:{_slug(title)}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors_:
        body["errors"] = errors_
    request_id = g.get("request_id") if g else None
    if request_id:
        body["request_id"] = request_id
    response = Response(orjson.dumps(body), status=status, mimetype=PROBLEM_JSON)
    if status == 503:
        response.headers["Retry-After"] = "1"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(errors.ModelregError)
    def _domain(error: errors.ModelregError) -> Response:
        status = status_for(error)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return problem(status, error.title, error.detail, error.errors, headers)

    @app.errorhandler(ArtifactTooLarge)
    def _too_large(error: ArtifactTooLarge) -> Response:
        return problem(413, "Payload too large", str(error), {"artifact": str(error)})

    @app.errorhandler(ArtifactNotFound)
    def _blob_missing(error: ArtifactNotFound) -> Response:
        log.error("artifact missing from the store: %s", error)
        return problem(404, "Not found", "the artifact is missing from the store")

    @app.errorhandler(StorageError)
    def _storage(error: StorageError) -> Response:
        log.error("artifact store error: %s", error)
        return problem(503, "Service unavailable", "the artifact store is unavailable")

    @app.errorhandler(RequestEntityTooLarge)
    def _body_too_large(error: RequestEntityTooLarge) -> Response:
        return problem(413, "Payload too large", "the request body exceeds the size limit")

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        status = error.code or 500
        response = problem(status, error.name, error.description or error.name)
        allowed = getattr(error, "valid_methods", None)
        if status == 405 and allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error (request %s)", g.get("request_id") if g else None)
        return problem(
            500,
            "Internal server error",
            "an unexpected error occurred; it has been logged with the request id",
        )
