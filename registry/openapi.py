"""The OpenAPI 3.1 description of the whole HTTP API, generated from the running app.

`build_spec(app)` walks `app.url_map` and describes each route from what its view declared
with `registry.endpoints.endpoint` (summary, body, responses, error statuses). Marshmallow
schemas in a declaration go through apispec's MarshmallowPlugin; named `JsonSchema`s become
components as they are. Authentication is read from the views themselves (`@public`,
`@requires`), so the document cannot drift from what `registry.access` enforces, and path
parameters take their patterns from the compiled regexes in `registry.names`. A route whose
view declares nothing is left out of the document and reported by `undocumented_endpoints`
(tests fail on it).

`get_spec(app)` builds the document once per app and caches it in `app.extensions`.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls
from flask import Flask
from marshmallow import Schema
from werkzeug.routing import Rule

from registry import schemas
from registry.access import needed_role
from registry.api_docs import EXAMPLE_MODEL
from registry.auth import ROLES, TOKEN_NAME_MAX
from registry.endpoints import Endpoint, ErrorFormat, JsonSchema, Undocumented, endpoint_spec
from registry.names import ALIAS_RE, FORMATS, MAX_VERSION, MODEL_NAME_RE, RESERVED_ALIASES

__all__ = [
    "EXAMPLE_MODEL",
    "SECURITY_SCHEME",
    "build_spec",
    "get_spec",
    "openapi_path",
    "required_role",
    "undocumented_endpoints",
]

OPENAPI_VERSION = "3.1.0"
EXTENSION_KEY = "modelreg.openapi"
SECURITY_SCHEME = "bearerAuth"
# Flask's own static route has no view of ours to declare anything on.
EXCLUDED_ENDPOINTS = frozenset({"static"})
IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})


def _anchored(pattern: str) -> str:
    return f"^{pattern}$"


MODEL_NAME_PATTERN = _anchored(MODEL_NAME_RE.pattern)
ALIAS_PATTERN = _anchored(ALIAS_RE.pattern)
# What `registry.names.parse_reference` can accept: a version number, or an alias (`latest`
# matches the alias grammar).
REF_PATTERN = _anchored(f"(?:[0-9]{{1,{len(str(MAX_VERSION))}}}|{ALIAS_RE.pattern})")

TAGS = [
    {
        "name": "registry",
        "description": "Registered models, versions, aliases and the audit trail.",
    },
    {"name": "serving", "description": "Predictions and the in-process model cache."},
    {
        "name": "v2",
        "description": "Open Inference Protocol (KServe V2 / Triton HTTP). "
        'Errors on these routes are `{"error": "..."}`.',
    },
    {
        "name": "v1",
        "description": "KServe V1 / TF Serving REST prediction. "
        'Errors on these routes are `{"error": "..."}`.',
    },
    {
        "name": "mlflow",
        "description": "MLflow's scoring protocol (`mlflow models serve`). Errors on these "
        'routes are `{"error_code": "...", "message": "..."}`.',
    },
    {"name": "tokens", "description": "API token administration (admin role)."},
    {
        "name": "webhooks",
        "description": "Registry changes announced over HTTP, signed per Standard Webhooks "
        "(admin role); see docs/webhooks.md.",
    },
    {
        "name": "monitoring",
        "description": "Reference profiles, live windows (drift, data quality, live metrics), "
        "ground-truth labels and monitors with alerts; see docs/monitoring.md.",
    },
    {
        "name": "policies",
        "description": "Traffic policies on an alias: weighted variants (A/B/n), sticky "
        "assignment and shadows; see docs/policies.md.",
    },
    {"name": "ops", "description": "Health, readiness, metrics and this API description."},
]

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "name": {
        "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN},
        "description": "The registered model's name.",
        "example": EXAMPLE_MODEL,
    },
    "ref": {
        "schema": {"type": "string", "pattern": REF_PATTERN},
        "description": "A version number, an alias, or `latest` (the highest non-archived "
        "version).",
        "example": "1",
    },
    "version": {
        "schema": {"type": "string", "pattern": REF_PATTERN},
        "description": "A version number, an alias, or `latest`.",
        "example": "1",
    },
    "alias": {
        "schema": {"type": "string", "pattern": ALIAS_PATTERN},
        "description": "An alias such as `production`.",
        "example": "production",
    },
    "token_name": {
        "schema": {"type": "string", "minLength": 1, "maxLength": TOKEN_NAME_MAX},
        "description": "The token's name.",
        "example": "pricing-service",
    },
    "webhook_id": {
        "schema": {"type": "integer", "minimum": 1},
        "description": "The webhook subscription's id.",
        "example": 1,
    },
    "delivery_id": {
        "schema": {"type": "integer", "minimum": 1},
        "description": "The delivery's id (its `webhook-id` header is `msg_<id>`).",
        "example": 1,
    },
}

QUERY_DETAILS: dict[str, dict[str, Any]] = {
    "limit": {"description": "Page size."},
    "cursor": {
        "description": "`next_cursor` from the previous page, as it was given: an opaque "
        "token. Anything else is refused with 422 (`errors.cursor`).",
    },
    "q": {"description": "A substring of the model name."},
    "tag": {"description": "`key` (has the tag) or `key:value`; repeat for all of several."},
    "status": {"description": "Only versions in this status."},
    "type": {
        "description": "Only events of this type (create, register, promote, rollback, "
        "archive, delete, ...)."
    },
}


def _choices(schema: type[Schema], field: str) -> list[str]:
    """The values a loading schema's OneOf validator accepts for `field`."""
    validator = schema().fields[field].validate
    return list(validator.choices)  # type: ignore[union-attr]


# Details the marshmallow response schemas leave open; every key they list is always dumped.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
RESPONSE_DETAILS: dict[str, dict[str, dict[str, Any]]] = {
    "ModelOut": {
        "tags": _STRING_MAP,
        "aliases": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "Alias -> version number.",
        },
    },
    "VersionOut": {
        "status": {"type": "string", "enum": _choices(schemas.VersionUpdateSchema, "status")},
        "format": {"type": "string", "enum": list(FORMATS)},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "tags": _STRING_MAP,
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "source": {
            "type": "object",
            "properties": {k: {"type": ["string", "null"]} for k in schemas.SourceSchema().fields},
        },
        "input_example": {
            "type": ["array", "null"],
            "items": {"description": "A row: a list of values, or an object of them."},
            "description": "A list of rows.",
        },
        "signature": {"anyOf": [{"$ref": "#/components/schemas/Signature"}, {"type": "null"}]},
        "aliases": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The aliases pointing at this version.",
        },
    },
    "TokenOut": {"role": {"type": "string", "enum": list(ROLES)}},
    "TokenCreated": {"role": {"type": "string", "enum": list(ROLES)}},
}
# Merged into the generated request schemas (a None value removes that keyword).
REQUEST_DETAILS: dict[str, dict[str, dict[str, Any]]] = {
    "ModelCreate": {"name": {"type": "string", "pattern": MODEL_NAME_PATTERN}},
    # Range(min=0, min_inclusive=False): apispec writes an inclusive minimum.
    "TokenCreate": {"expires_in_days": {"minimum": None, "exclusiveMinimum": 0}},
    "Promote": {
        "alias": {
            "type": "string",
            "pattern": ALIAS_PATTERN,
            "default": "production",
            "description": "Not "
            + " or ".join(f"`{a}`" for a in sorted(RESERVED_ALIASES))
            + " (reserved).",
        }
    },
}

_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """`/models/<name>/versions/<ref>` -> `/models/{name}/versions/{ref}`."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def operation_id(endpoint: str) -> str:
    blueprint, _, function = endpoint.rpartition(".")
    words = function.split("_")
    if blueprint in ("v1", "v2"):  # their view names repeat the native ones (predict, ...)
        return blueprint + "".join(w.capitalize() for w in words)
    return words[0] + "".join(w.capitalize() for w in words[1:])


def required_role(view: Callable[..., Any], method: str) -> str | None:
    """The role `registry.access` demands of this view, or None when it is public."""
    return needed_role(view, method)


def undocumented_endpoints(app: Flask) -> list[str]:
    """Routes of the app whose view declares no operation (nor `@undocumented`)."""
    return sorted(
        f"{sorted((rule.methods or set()) - IGNORED_METHODS)} {rule.rule} ({rule.endpoint})"
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in EXCLUDED_ENDPOINTS
        and endpoint_spec(app.view_functions[rule.endpoint]) is None
    )


class _Builder:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.plugin = MarshmallowPlugin()
        self.spec = APISpec(
            title="modelreg",
            version=_server_version(),
            openapi_version=OPENAPI_VERSION,
            plugins=[self.plugin],
            info={
                "description": "A SQL-backed model registry with multi-model serving. Errors "
                "are `application/problem+json` (RFC 9457), except on the Open Inference "
                'Protocol routes (`/v2/...`), which answer `{"error": "..."}`. Every '
                "operation needs `Authorization: Bearer <token>` unless it is marked public; "
                "roles, each including the ones before it: " + ", ".join(ROLES) + ".",
                "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            },
            tags=TAGS,
        )
        self.plugin.converter.add_attribute_function(_self_described)
        self.json_schemas: dict[str, JsonSchema] = {}
        self.error_formats: dict[str, ErrorFormat] = {}

    def build(self) -> dict[str, Any]:
        self.spec.components.security_scheme(
            SECURITY_SCHEME,
            {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token (`modelreg tokens create` or POST /tokens).",
            },
        )
        tags = {tag["name"] for tag in TAGS}
        seen_ids: set[str] = set()
        for rule in sorted(self.app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
            if rule.endpoint in EXCLUDED_ENDPOINTS:
                continue
            view = self.app.view_functions[rule.endpoint]
            declared = endpoint_spec(view)
            if declared is None or isinstance(declared, Undocumented):
                continue
            if declared.tag not in tags:
                raise ValueError(f"{rule.endpoint}: unknown tag {declared.tag!r}")
            operations = {}
            for method in sorted((rule.methods or set()) - IGNORED_METHODS):
                operation = self._operation(rule, method, declared, view)
                if operation["operationId"] in seen_ids:
                    operation["operationId"] += method.capitalize()
                seen_ids.add(operation["operationId"])
                operations[method.lower()] = operation
            self.spec.path(path=openapi_path(rule.rule), operations=operations)
        for error_format in self.error_formats.values():
            for status, response in error_format.responses.items():
                name = f"{error_format.name}{status}"
                self.spec.components.response(name, self._resolve(response))
        document = self.spec.to_dict()
        _apply_details(document["components"]["schemas"])
        return document

    def _operation(
        self, rule: Rule, method: str, declared: Endpoint, view: Callable[..., Any]
    ) -> dict[str, Any]:
        role = required_role(view, method)
        parameters: list[Any] = [
            {"in": "path", "name": name, "required": True, **copy.deepcopy(PATH_PARAMETERS[name])}
            for name in _RULE_ARGUMENT.findall(rule.rule)
        ]
        if declared.query is not None:
            parameters.extend(self._query_parameters(declared.query))
        parameters.extend(self._resolve(p) for p in declared.parameters)

        error_format = self._error_format(declared.error_format)
        responses = {status: self._resolve(r) for status, r in declared.responses.items()}
        errors = set(declared.errors)
        if role is not None:
            errors |= {401, 403}
        for status in sorted(errors):
            responses.setdefault(status, error_format.ref(status))

        if role is None:
            access = "Public: no token needed."
        else:
            access = f"Requires the `{role}` role (or higher)."
        operation: dict[str, Any] = {
            "operationId": operation_id(rule.endpoint),
            "tags": [declared.tag],
            "summary": declared.summary,
            "description": f"{access} {declared.description}".strip(),
            "responses": {str(status): responses[status] for status in sorted(responses)},
            "security": [] if role is None else [{SECURITY_SCHEME: []}],
        }
        if role is not None:
            operation["x-required-role"] = role
        if parameters:
            operation["parameters"] = parameters
        if declared.body is not None:
            operation["requestBody"] = self._resolve(declared.body)
        return operation

    def _error_format(self, error_format: ErrorFormat) -> ErrorFormat:
        known = self.error_formats.setdefault(error_format.name, error_format)
        if known is not error_format:
            raise ValueError(f"two error formats are named {error_format.name!r}")
        return error_format

    def _resolve(self, node: Any) -> Any:
        """A JSON-ready copy of a declaration: schemas in it become registered `$ref`s."""
        if isinstance(node, JsonSchema):
            known = self.json_schemas.get(node.name)
            if known is None:
                self.json_schemas[node.name] = node
                self.spec.components.schema(node.name, self._resolve(node.schema))
            elif known is not node:
                raise ValueError(f"two JSON schemas are named {node.name!r}")
            return _ref(node.name)
        if isinstance(node, Schema) or (isinstance(node, type) and issubclass(node, Schema)):
            ref = self.plugin.converter.resolve_nested_schema(node)
            expected = _ref(schema_name(node))
            if ref != expected:  # apispec renames on a clash (`ModelOut1`): refuse instead
                raise ValueError(f"schema {node!r} was registered as {ref}, not {expected}")
            return ref
        if isinstance(node, Mapping):
            return {key: self._resolve(value) for key, value in node.items()}
        if isinstance(node, list | tuple):
            return [self._resolve(value) for value in node]
        return node

    def _query_parameters(self, query: Schema) -> list[dict[str, Any]]:
        converted = self.plugin.converter.schema2parameters(query, location="query")
        by_name = {p["name"]: p for p in converted}
        config = self.app.config
        for name, parameter in by_name.items():
            parameter.update(copy.deepcopy(QUERY_DETAILS.get(name, {})))
            if name == "limit":
                parameter["schema"].update(
                    minimum=1,
                    maximum=config.get("MAX_PAGE_SIZE", 500),
                    default=config.get("DEFAULT_PAGE_SIZE", 50),
                )
            elif name == "cursor":  # registry.pagination.encode_cursor: unpadded base64url
                parameter["schema"]["pattern"] = "^[A-Za-z0-9_-]*$"
        order = list(query.only) if query.only else list(by_name)  # as the declaration lists them
        return [by_name[name] for name in order]


def schema_name(schema: Schema | type[Schema]) -> str:
    """The component name of a marshmallow schema: its class name without `Schema`, as
    apispec's default resolver names nested schemas."""
    return resolve_schema_cls(schema).__name__.removesuffix("Schema")


def _self_described(converter: Any, field: Any, **_: Any) -> dict[str, Any]:
    """A field's own account of limits its validators cannot show (tag maps' count and key
    grammar): apispec calls this for every field it converts."""
    describe = getattr(field, "json_schema_extra", None)
    return describe() if callable(describe) else {}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _apply_details(components: dict[str, Any]) -> None:
    for name, details in RESPONSE_DETAILS.items():
        schema = components[name]
        schema["properties"].update(copy.deepcopy(details))
        schema["required"] = sorted(schema["properties"])
    for name, details in REQUEST_DETAILS.items():
        properties = components[name]["properties"]
        for prop, detail in details.items():
            for keyword, value in detail.items():
                if value is None:
                    properties[prop].pop(keyword, None)
                else:
                    properties[prop][keyword] = copy.deepcopy(value)
    for schema in components.values():
        _dict_lengths(schema)


def _dict_lengths(node: Any) -> None:
    """apispec writes a Length validator on a Dict field as min/maxLength: for an object
    that is min/maxProperties."""
    if isinstance(node, dict):
        if node.get("type") == "object" or "object" in (node.get("type") or ()):
            for old, new in (("minLength", "minProperties"), ("maxLength", "maxProperties")):
                if old in node:
                    node[new] = node.pop(old)
        for value in node.values():
            _dict_lengths(value)
    elif isinstance(node, list):
        for value in node:
            _dict_lengths(value)


def _server_version() -> str:
    from serving.v2 import server_version

    return server_version()


def build_spec(app: Flask) -> dict[str, Any]:
    """A fresh OpenAPI document for `app` (use `get_spec` for the cached one)."""
    return _Builder(app).build()


_build_lock = threading.Lock()


def get_spec(app: Flask) -> dict[str, Any]:
    """The app's document, built on first use and cached in `app.extensions`."""
    cached = app.extensions.get(EXTENSION_KEY)
    if cached is None:
        with _build_lock:
            cached = app.extensions.get(EXTENSION_KEY)
            if cached is None:
                cached = app.extensions[EXTENSION_KEY] = build_spec(app)
    return cached
