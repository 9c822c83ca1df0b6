"""The one mapping from errors to `application/problem+json` responses (RFC 9457)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Flask, Response, current_app, g, has_request_context, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from registry import errors
from registry.answers import Answer
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


@dataclass(frozen=True, slots=True)
class Problem:
    """What went wrong, before a protocol renders it (problem+json here, V2's own shape)."""

    status: int
    title: str
    detail: str
    errors: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()


def render_problem(problem_: Problem, request_id: str | None) -> Answer:
    body: dict[str, Any] = {
        "type": f"urn:modelreg:problem:{_slug(problem_.title)}",
        "title": problem_.title,
        "status": problem_.status,
        "detail": problem_.detail,
    }
    if problem_.errors:
        body["errors"] = problem_.errors
    if request_id:
        body["request_id"] = request_id
    headers = [("Content-Type", PROBLEM_JSON)]
    if problem_.status == 503:
        headers.append(("Retry-After", "1"))
    headers.extend(problem_.headers)
    return Answer(problem_.status, headers, orjson.dumps(body))


def problem_for(error: BaseException, request_id: str | None = None) -> Problem:
    """The one mapping from an exception to the problem every protocol reports."""
    if isinstance(error, errors.ModelregError):
        status = status_for(error)
        auth = (("WWW-Authenticate", "Bearer"),) if status == 401 else ()
        return Problem(status, error.title, error.detail, error.errors, auth)
    if isinstance(error, ArtifactTooLarge):
        reason = f"{error} (server setting MAX_ARTIFACT_BYTES)"
        return Problem(413, "Payload too large", reason, {"artifact": reason})
    if isinstance(error, ArtifactNotFound):
        log.error("artifact missing from the store: %s", error)
        return Problem(404, "Not found", "the artifact is missing from the store")
    if isinstance(error, StorageError):
        log.error("artifact store error: %s", error)
        return Problem(503, "Service unavailable", "the artifact store is unavailable")
    if isinstance(error, RequestEntityTooLarge):
        return _body_too_large()
    if isinstance(error, HTTPException):
        status = error.code or 500
        allowed = getattr(error, "valid_methods", None)
        extra = (("Allow", ", ".join(allowed)),) if status == 405 and allowed else ()
        return Problem(status, error.name, error.description or error.name, None, extra)
    log.error("unhandled error (request %s)", request_id, exc_info=error)
    return Problem(
        500,
        "Internal server error",
        "an unexpected error occurred; it has been logged with the request id",
    )


def _body_too_large() -> Problem:
    """werkzeug's 413 says neither the limit nor how to change it: say both."""
    limit = request.max_content_length if has_request_context() else None
    if limit is None:
        return Problem(413, "Payload too large", "the request body exceeds the size limit")
    if limit == current_app.config.get("MAX_PREDICT_BODY_BYTES"):
        setting = "MAX_PREDICT_BODY_BYTES"
    else:  # registration raises the request's own limit to the artifact's plus metadata
        setting = "MAX_ARTIFACT_BYTES (plus MAX_METADATA_BYTES)"
    reason = f"the limit is {limit} bytes (server setting {setting})"
    return Problem(
        413, "Payload too large", f"the request body is too large: {reason}", {"body": reason}
    )


def to_response(answer: Answer) -> Response:
    return Response(answer.body, status=answer.status, headers=answer.headers)


def problem_response(error: BaseException) -> Response:
    request_id = g.get("request_id") if g else None
    return to_response(render_problem(problem_for(error, request_id), request_id))


def register_error_handlers(app: Flask) -> None:
    # Most specific first is Flask's own rule (by class hierarchy); every handler renders
    # through problem_for so the fast path (serving/fastpath.py) answers exactly alike.
    for kind in (
        errors.ModelregError,
        ArtifactTooLarge,
        ArtifactNotFound,
        StorageError,
        RequestEntityTooLarge,
        HTTPException,
        Exception,
    ):
        app.register_error_handler(kind, problem_response)
