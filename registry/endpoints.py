"""Endpoint declarations: what a view takes and answers, stated once, on the view itself.

`@endpoint(...)` goes directly above a view's route decorator and attaches an `Endpoint` to
the view function. Nothing runs per request: `registry.openapi` reads the attribute when it
builds the document, by walking the app's URL map. Authentication is not declared here; the
document reads it from what `registry.access` (`@requires`, `@public`) puts on the view.

Schemas inside a declaration are written as they are used: a marshmallow schema class (the one
the view loads or dumps), a named `JsonSchema` for bodies marshmallow does not model, or plain
JSON schema. The document builder turns the first two into `$ref`s and registers them once.

Error statuses name reusable responses of the view's `ErrorFormat`: `PROBLEM` (RFC 9457
problem+json) unless the view says otherwise; each protocol with its own error body defines
its own format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from marshmallow import Schema, fields

from registry.problems import PROBLEM_JSON

F = TypeVar("F", bound=Callable[..., Any])
SPEC_ATTRIBUTE = "_endpoint_spec"


@dataclass(frozen=True, eq=False)
class JsonSchema:
    """A named JSON schema component; compared by identity, so one name means one object."""

    name: str
    schema: Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class ErrorFormat:
    """The error body of a family of endpoints: one reusable response per status.

    A status is published as `#/components/responses/{name}{status}`.
    """

    name: str
    responses: Mapping[int, Mapping[str, Any]]

    def ref(self, status: int) -> dict[str, str]:
        return {"$ref": f"#/components/responses/{self.name}{status}"}


@dataclass(frozen=True, eq=False)
class Endpoint:
    """One operation, as the document describes it; the parts Flask does not know."""

    summary: str
    tag: str
    responses: Mapping[int, Mapping[str, Any]]
    errors: tuple[int, ...]
    error_format: ErrorFormat
    body: Mapping[str, Any] | None = None
    query: Schema | None = None  # its fields become query parameters
    parameters: tuple[Mapping[str, Any], ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Undocumented:
    """A route that is deliberately not an API operation (e.g. static assets)."""

    reason: str


# ---- the default error format: problem+json --------------------------------------------------


class ProblemSchema(Schema):
    """RFC 9457 problem details, as `registry.problems.problem` writes them."""

    type = fields.String(required=True, metadata={"description": "A URN naming the problem."})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        metadata={"description": "Field (or header) name -> what is wrong with it."},
    )
    request_id = fields.String(metadata={"description": "Also in the X-Request-ID header."})


def header(description: str, schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": dict(schema or {"type": "string"})}


# Every error format answers these with the same headers.
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": header("`Bearer`.")},
    503: {"Retry-After": header("Seconds.")},
}


def error_responses(
    titles: Mapping[int, str], content: Mapping[str, Any]
) -> dict[int, dict[str, Any]]:
    """One response per status: its title, the format's body, the common headers."""
    responses: dict[int, dict[str, Any]] = {}
    for status, title in titles.items():
        response: dict[str, Any] = {"description": title, "content": dict(content)}
        if status in ERROR_HEADERS:
            response["headers"] = dict(ERROR_HEADERS[status])
        responses[status] = response
    return responses


PROBLEM = ErrorFormat(
    "Problem",
    error_responses(
        {
            400: "Malformed request: the body or a header cannot be parsed.",
            401: "No token, or an invalid, expired or revoked token.",
            403: "The token's role is too low, or the token is restricted to other models.",
            404: "Not found.",
            409: "Conflict with the current state.",
            413: "The request body is too large.",
            415: "Unsupported media type.",
            422: "The request is well-formed but its content is invalid; `errors` names each "
            "field.",
            503: "A dependency (database or artifact store) is unavailable; retry after "
            "`Retry-After`.",
        },
        {PROBLEM_JSON: {"schema": ProblemSchema}},
    ),
)
# What a native endpoint that reads a body can answer besides its own statuses.
BODY_ERRORS = (400, 401, 403, 413, 415, 422, 503)


# ---- the decorators --------------------------------------------------------------------------


def endpoint(
    *,
    summary: str,
    tag: str,
    responses: Mapping[int, Mapping[str, Any]],
    errors: Iterable[int] = (),
    body: Mapping[str, Any] | None = None,
    query: Schema | None = None,
    parameters: Iterable[Mapping[str, Any]] = (),
    description: str = "",
    error_format: ErrorFormat = PROBLEM,
) -> Callable[[F], F]:
    """Declare a view's operation. 401 and 403 are added for views that need a token.

    A mistake (an error status the format cannot answer, a second declaration) fails at
    import, not when the document is first requested.
    """
    errors = tuple(sorted(set(errors)))
    unknown = [s for s in errors if s not in error_format.responses]
    if unknown:
        raise ValueError(f"{error_format.name} has no response for {unknown}")
    if not summary or not tag or not responses:
        raise ValueError("an endpoint needs a summary, a tag and at least one response")
    spec = Endpoint(
        summary=summary,
        tag=tag,
        responses=dict(responses),
        errors=errors,
        error_format=error_format,
        body=body,
        query=query,
        parameters=tuple(parameters),
        description=description,
    )
    return _attach(spec)


def undocumented(reason: str) -> Callable[[F], F]:
    """Keep a route out of the document on purpose (the undocumented-route test accepts it)."""
    return _attach(Undocumented(reason))


def _attach(spec: Endpoint | Undocumented) -> Callable[[F], F]:
    def mark(view: F) -> F:
        if getattr(view, SPEC_ATTRIBUTE, None) is not None:
            raise ValueError(f"{view.__qualname__} is declared twice")
        setattr(view, SPEC_ATTRIBUTE, spec)
        return view

    return mark


def endpoint_spec(view: Callable[..., Any]) -> Endpoint | Undocumented | None:
    """What the view declared, or None when it declared nothing."""
    return getattr(view, SPEC_ATTRIBUTE, None)


# ---- helpers for writing declarations --------------------------------------------------------


def json_answer(
    description: str,
    schema: Any,
    *,
    example: Any = None,
    headers: Mapping[str, Any] | None = None,
    media: str = "application/json",
) -> dict[str, Any]:
    """A response with a body of `schema` (a marshmallow class, `JsonSchema` or dict)."""
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    response: dict[str, Any] = {"description": description, "content": {media: content}}
    if headers:
        response["headers"] = dict(headers)
    return response


def no_body(description: str) -> dict[str, Any]:
    """A response without a body (204, 304)."""
    return {"description": description}


def request_body(
    schema: Any,
    *,
    required: bool = True,
    examples: Mapping[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """A JSON request body of `schema`."""
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = dict(examples)
    body: dict[str, Any] = {"required": required, "content": {"application/json": media}}
    if description:
        body["description"] = description
    return body


def binary(description: str = "") -> dict[str, Any]:
    """An octet-stream schema (artifact bytes, binary tensors)."""
    schema = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
    if description:
        schema["description"] = description
    return schema
