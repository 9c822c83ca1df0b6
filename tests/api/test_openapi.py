"""The OpenAPI document (`GET /openapi.json`) and the offline reference page (`GET /docs`).

The document must be valid OpenAPI 3.1, describe every route the app registers, demand the
bearer token exactly where `registry.access` does, and carry examples that work against the
real app. The page and each of its assets come from the app itself, with the right content
types, and refer to no other host.
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from registry import auth, names, openapi
from registry import schemas as schemas_module
from registry.endpoints import endpoint, no_body
from registry.openapi_views import DOCS_ASSETS, DOCS_DIR
from tests.conftest import fit_linear, joblib_bytes, make_config

ROOT = Path(__file__).resolve().parents[2]
HTTP_METHODS = {"get", "put", "post", "patch", "delete"}
TAGS = {
    "registry",
    "serving",
    "v2",
    "v1",
    "mlflow",
    "ops",
    "tokens",
    "webhooks",
    "monitoring",
    "policies",
}
MODEL = openapi.EXAMPLE_MODEL


def _not_api_route(rule: Any) -> bool:
    """Flask's static files, the reference page's assets, V2's catch-all for unknown paths and
    the web UI's pages (and the root that sends a browser there) are not API operations."""
    if rule.endpoint == "ui_root.root" or rule.rule.startswith("/ui/"):
        return True
    return rule.endpoint in ("static", "v2.unknown_route") or rule.rule.startswith("/docs/")


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[Any]:
    from manage import create_app

    application = create_app(
        make_config(tmp_path_factory.mktemp("openapi"), AUTH_DISABLED=False, ACCESS_LOG=False)
    )
    yield application
    application.extensions["modelreg"].engine.dispose()


@pytest.fixture(scope="module")
def admin(app) -> dict[str, str]:
    secret, _ = auth.create_token(
        app.extensions["modelreg"].uow, name="openapi-admin", role="admin", actor="test"
    )
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def document(client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


# ---- the document ------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(document).validate()


def _arrays_without_items(node: Any, where: str = "#") -> list[str]:
    found = []
    if isinstance(node, dict):
        types = node.get("type")
        if (types == "array" or (isinstance(types, list) and "array" in types)) and (
            "items" not in node and "prefixItems" not in node
        ):
            found.append(where)
        for key, value in node.items():
            found += _arrays_without_items(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _arrays_without_items(value, f"{where}/{index}")
    return found


def test_every_array_says_what_it_holds(document):
    """Client generators (openapi-python-client) drop an array schema without `items`, and
    with it the operation or model that uses it."""
    assert _arrays_without_items(document) == []


def test_tag_maps_state_their_limits(document):
    """The limits the tag field enforces, so that generated requests respect them."""
    tags = document["components"]["schemas"]["ModelCreate"]["properties"]["tags"]
    assert tags["maxProperties"] == schemas_module.MAX_TAGS
    assert tags["propertyNames"]["maxLength"] == schemas_module.MAX_TAG_KEY
    assert tags["propertyNames"]["minLength"] == 1
    assert tags["additionalProperties"]["maxLength"] == schemas_module.MAX_TAG_VALUE
    patch = document["components"]["schemas"]["VersionUpdate"]["properties"]["tags"]
    assert patch["maxProperties"] == schemas_module.MAX_TAGS


def test_every_reason_has_a_max_length(document):
    reasons = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "reason" and isinstance(value, dict) and "type" in value:
                    reasons.append(value)
                if key == "name" and value == "reason" and "schema" in node:
                    reasons.append(node["schema"])
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    # Not the V2 schemas: a V2 model's `reason` is why it is unavailable.
    components = document["components"]["schemas"]
    walk([document["paths"], {k: v for k, v in components.items() if not k.startswith("V2")}])
    assert reasons and all(r.get("maxLength") == schemas_module.MAX_REASON for r in reasons)


def test_cursor_is_described_with_its_refusal(document):
    for path in ("/models", "/models/{name}/versions", "/models/{name}/events"):
        operation = document["paths"][path]["get"]
        cursor = next(p for p in operation["parameters"] if p["name"] == "cursor")
        assert "422" in cursor["description"] and "422" in operation["responses"]
        assert cursor["schema"]["pattern"] == "^[A-Za-z0-9_-]*$"


def _documentation_gaps(app: Any, document: dict[str, Any]) -> list[str]:
    """Routes of `app` that `document` does not describe, or describes but does not route."""
    gaps = [f"undeclared: {route}" for route in openapi.undocumented_endpoints(app)]
    expected = set()
    for rule in app.url_map.iter_rules():
        if _not_api_route(rule):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            expected.add((openapi.openapi_path(rule.rule), method.lower()))
    documented = {(path, method) for path, method, _ in _operations(document)}
    gaps += [f"missing from /openapi.json: {m} {p}" for p, m in sorted(expected - documented)]
    gaps += [f"documented but not routed: {m} {p}" for p, m in sorted(documented - expected)]
    return gaps


def test_every_registered_route_is_documented(app, document):
    assert _documentation_gaps(app, document) == []


def test_a_view_without_a_declaration_is_caught(tmp_path):
    """The check above really checks: a route whose view declares nothing fails it, and a
    declared one added the same way passes."""
    from manage import create_app

    application = create_app(make_config(tmp_path, AUTH_DISABLED=False, ACCESS_LOG=False))
    try:

        def undeclared(name: str) -> str:
            return name

        @endpoint(summary="A declared extra", tag="ops", responses={200: no_body("Fine.")})
        def declared(name: str) -> str:
            return name

        application.add_url_rule("/models/<name>/undeclared", view_func=undeclared)
        application.add_url_rule("/models/<name>/declared", view_func=declared)
        document = openapi.build_spec(application)
        assert "/models/{name}/declared" in document["paths"]
        assert _documentation_gaps(application, document) == [
            "undeclared: ['GET'] /models/<name>/undeclared (undeclared)",
            "missing from /openapi.json: get /models/{name}/undeclared",
        ]
    finally:
        application.extensions["modelreg"].engine.dispose()


def test_every_path_parameter_is_declared(document):
    for path, method, operation in _operations(document):
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{([^}]+)}", path)), (method, path)
    name = next(
        p for p in document["paths"]["/models/{name}"]["get"]["parameters"] if p["name"] == "name"
    )
    assert name["schema"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def test_path_patterns_are_the_registry_grammar(document):
    """The patterns are the compiled regexes of `registry.names`, not copies of them."""
    parameters = document["paths"]["/models/{name}/aliases/{alias}/rollback"]["post"]["parameters"]
    patterns = {p["name"]: p["schema"]["pattern"] for p in parameters if p["in"] == "path"}
    assert patterns == {
        "name": f"^{names.MODEL_NAME_RE.pattern}$",
        "alias": f"^{names.ALIAS_RE.pattern}$",
    }
    ref = re.compile(
        document["paths"]["/models/{name}/versions/{ref}"]["get"]["parameters"][1]["schema"][
            "pattern"
        ]
    )
    for accepted in ("1", str(names.MAX_VERSION), "latest", "production"):
        assert ref.fullmatch(accepted) and names.parse_reference(accepted) is not None


def test_list_operations_take_their_query_parameters(document):
    def query(path: str) -> dict[str, dict[str, Any]]:
        parameters = document["paths"][path]["get"]["parameters"]
        return {p["name"]: p for p in parameters if p["in"] == "query"}

    models = query("/models")
    assert set(models) == {"limit", "cursor", "q", "tag"}
    assert models["tag"]["schema"]["type"] == "array"
    assert models["tag"]["explode"] is True  # repeatable: ?tag=a&tag=b:c
    assert models["limit"]["schema"]["maximum"] == 500
    assert set(query("/models/{name}/versions")) == {"limit", "cursor", "status", "tag"}
    assert set(query("/models/{name}/events")) == {"limit", "cursor", "type"}


def test_auth_matches_what_the_views_enforce(app, document, client):
    views = {
        (openapi.openapi_path(rule.rule), method.lower()): app.view_functions[rule.endpoint]
        for rule in app.url_map.iter_rules()
        for method in rule.methods
    }
    scheme = document["components"]["securitySchemes"][openapi.SECURITY_SCHEME]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    public = []
    for path, method, operation in _operations(document):
        role = openapi.required_role(views[(path, method)], method.upper())
        if role is None:
            assert operation["security"] == [], (method, path)
            public.append(path)
            continue
        assert operation["security"] == [{openapi.SECURITY_SCHEME: []}], (method, path)
        assert {"401", "403"} <= set(operation["responses"]), (method, path)
        assert operation["x-required-role"] == role
        # ... and the app really refuses the request without a token.
        url = path.replace("{name}", MODEL).replace("{ref}", "1").replace("{version}", "1")
        url = url.replace("{alias}", "production").replace("{token_name}", "nobody")
        url = url.replace("{webhook_id}", "1").replace("{delivery_id}", "1")
        response = client.open(url, method=method.upper())
        assert response.status_code == 401, (method, path, response.status_code)
    assert sorted(public) == [
        "/docs",
        "/health",
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/ping",
        "/readyz",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
    ]


def test_error_responses_have_their_bodies(document):
    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    for path, method, operation in _operations(document):
        for status, raw in operation["responses"].items():
            if int(status) < 400:
                continue
            content = _resolve(document, raw)["content"]
            if status == "503" and path.endswith(("/ready", "/readyz")):
                # Readiness probes answer "not ready" with their own body.
                assert content["application/json"]["schema"] in (
                    ref("Readiness"),
                    ref("V2Ready"),
                    ref("V2ModelReady"),
                ), path
            elif operation["tags"] == ["mlflow"]:
                assert content == {"application/json": {"schema": ref("MlflowError")}}, path
            elif operation["tags"] not in (["v2"], ["v1"]):
                assert content == {"application/problem+json": {"schema": ref("Problem")}}, (
                    method,
                    path,
                    status,
                )
            else:
                assert content["application/json"]["schema"] == ref("V2Error"), (
                    method,
                    path,
                    status,
                )
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == {
        "type",
        "title",
        "status",
        "detail",
        "errors",
        "request_id",
    }
    assert set(problem["required"]) == {"type", "title", "status", "detail"}


def test_error_statuses_per_operation(document):
    def statuses(path: str, method: str) -> set[int]:
        return {int(s) for s in document["paths"][path][method]["responses"]}

    assert {201, 400, 401, 403, 409, 413, 415, 422, 503} <= statuses("/models", "post")
    assert {200, 404, 409, 422} <= statuses("/models/{name}/versions/{ref}/promote", "post")
    assert {200, 400, 404, 413, 415, 422, 503} <= statuses("/models/{name}/{ref}/predict", "post")
    assert {201, 400, 413, 415, 422} <= statuses("/models/{name}/versions", "post")
    assert 422 not in statuses("/v2/models/{name}/infer", "post")  # V2 answers 400 instead


def test_operation_ids_and_tags(document):
    ids = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9]*", i) for i in ids), ids
    for path, method, operation in _operations(document):
        assert len(operation["tags"]) == 1 and operation["tags"][0] in TAGS, (method, path)
        assert operation["summary"], (method, path)
    assert {tag["name"] for tag in document["tags"]} == TAGS


def test_request_bodies(document):
    paths = document["paths"]
    register = paths["/models/{name}/versions"]["post"]["requestBody"]["content"]
    form = register["multipart/form-data"]
    assert form["schema"]["required"] == ["artifact"]
    assert form["schema"]["properties"]["artifact"]["format"] == "binary"
    assert form["schema"]["properties"]["metadata"]["contentSchema"] == {
        "$ref": "#/components/schemas/VersionMetadata"
    }
    predict = _resolve(
        document,
        paths["/models/{name}/{ref}/predict"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ],
    )
    alternatives = [_resolve(document, alt) for alt in predict["oneOf"]]
    keys = [alt["required"] for alt in alternatives]
    assert keys == [["instances"], ["inputs"], ["dataframe_split"], ["dataframe_records"]]
    assert all(
        alt["properties"]["method"]["enum"] == ["predict", "predict_proba"] for alt in alternatives
    )
    infer = paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert infer["application/json"]["schema"] == {"$ref": "#/components/schemas/V2InferRequest"}
    schemas = document["components"]["schemas"]
    assert schemas["ModelCreate"]["required"] == ["name"]
    assert schemas["VersionMetadata"]["additionalProperties"] is False


def test_success_responses_reference_the_view_schemas(document):
    def schema(path: str, method: str, status: str) -> Any:
        return document["paths"][path][method]["responses"][status]["content"]["application/json"][
            "schema"
        ]["$ref"].rsplit("/", 1)[1]

    assert schema("/models", "post", "201") == "ModelOut"
    assert schema("/models", "get", "200") == "ModelList"
    assert schema("/models/{name}/versions", "post", "201") == "VersionOut"
    assert schema("/models/{name}/versions/{ref}/promote", "post", "200") == "AliasMoveOut"
    assert schema("/models/{name}/aliases/{alias}/rollback", "post", "200") == "AliasMoveOut"
    assert schema("/models/{name}/events", "get", "200") == "EventList"
    assert schema("/tokens", "post", "201") == "TokenCreated"
    assert schema("/serving/cache", "get", "200") == "CacheStatus"
    assert schema("/models/{name}/{ref}/predict", "post", "200") == "PredictResponse"
    assert schema("/v2/models/{name}/infer", "post", "200") == "V2InferResponse"
    listing = document["components"]["schemas"]["VersionList"]
    assert set(listing["required"]) == {"versions", "next_cursor"}


# ---- examples work against the real app ----------------------------------------------------


def _examples(media: dict[str, Any]) -> dict[str, Any]:
    return {name: example["value"] for name, example in media.get("examples", {}).items()}


def test_documented_examples_work(client, admin, document):
    paths = document["paths"]
    created = client.post("/models", json={"name": MODEL}, headers=admin)
    assert created.status_code == 201
    register = paths["/models/{name}/versions"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]
    metadata = register["schema"]["properties"]["metadata"]["example"]
    assert _examples(register)["joblib"]["metadata"] == metadata
    meta = json.loads(metadata)
    meta["input_example"] = [[3.0, 2.0, 1.0]]  # this test's model has 3 numeric features
    for _ in range(2):
        response = client.post(
            f"/models/{MODEL}/versions",
            data={
                "artifact": (io.BytesIO(joblib_bytes(fit_linear(3))), "m.joblib"),
                "metadata": json.dumps(meta),
            },
            content_type="multipart/form-data",
            headers=admin,
        )
        assert response.status_code == 201, response.data
    promote = _examples(
        paths["/models/{name}/versions/{ref}/promote"]["post"]["requestBody"]["content"][
            "application/json"
        ]
    )
    moved = client.post(
        f"/models/{MODEL}/versions/1/promote", json=promote["production"], headers=admin
    )
    assert moved.status_code == 200, moved.data
    compare_and_set = promote["compare-and-set"]
    refused = client.post(
        f"/models/{MODEL}/versions/2/promote", json=compare_and_set, headers=admin
    )
    assert refused.status_code == 409  # production is at 1, not the example's 6
    assert refused.mimetype == "application/problem+json"
    predict = _examples(
        paths["/models/{name}/{ref}/predict"]["post"]["requestBody"]["content"]["application/json"]
    )
    answered = client.post(
        f"/models/{MODEL}/production/predict", json=predict["instances"], headers=admin
    )
    assert answered.status_code == 200, answered.data
    assert answered.get_json()["version"] == 1
    assert answered.headers["X-Model-Version"] == "1"
    infer = _examples(
        paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]
    )
    inferred = client.post(f"/v2/models/{MODEL}/infer", json=infer["rows"], headers=admin)
    assert inferred.status_code == 200, inferred.data


# ---- built once ----------------------------------------------------------------------------


def test_document_is_built_once_per_app(app, client, monkeypatch):
    first = client.get("/openapi.json")
    assert openapi.get_spec(app) is openapi.get_spec(app)

    def fail(_app):
        raise AssertionError("the document was rebuilt")

    monkeypatch.setattr(openapi, "build_spec", fail)
    again = client.get("/openapi.json")
    assert again.data == first.data
    assert again.headers["ETag"] == first.headers["ETag"]
    not_modified = client.get("/openapi.json", headers={"If-None-Match": first.headers["ETag"]})
    assert not_modified.status_code == 304


# ---- the reference page ----------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("src", "href", "data-spec") and value is not None:
                self.urls.append(value)


_COMMENTS = {
    "html": re.compile(r"<!--.*?-->", re.S),
    "css": re.compile(r"/\*.*?\*/", re.S),
    "js": re.compile(r"/\*.*?\*/|(?<![:\"'])//[^\n]*", re.S),
}
_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.I)


def _external_urls(text: str, kind: str) -> list[str]:
    return _URL.findall(_COMMENTS[kind].sub("", text))


def test_docs_page_is_served_with_its_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert "<title>modelreg API reference</title>" in html
    assert _external_urls(html, "html") == []
    parser = _Links()
    parser.feed(html)
    local = [u for u in parser.urls if not u.startswith("data:")]
    assert all(not re.match(r"^[a-z]+:|^//", u) for u in local), local
    assets = sorted(u.removeprefix("docs/") for u in local if u.startswith("docs/"))
    assert assets == ["docs.css", "docs.js"]
    assert "openapi.json" in local  # the raw document link and the page's data source

    kinds = {"docs.js": ("text/javascript", "js"), "docs.css": ("text/css", "css")}
    for asset in assets:
        response = client.get(f"/docs/{asset}")
        mimetype, kind = kinds[asset]
        assert response.status_code == 200, asset
        assert response.mimetype == mimetype
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        text = response.get_data(as_text=True)
        assert _external_urls(text, kind) == [], asset
        if kind == "js":
            assert "fetch(source" in text and "openapi.json" in text
            assert ".innerHTML" not in _COMMENTS["js"].sub("", text)
            assert "operationId" in text and "requestBody" in text and "responses" in text
        else:
            assert "details.op" in text and "@import" not in text and "url(" not in text


def test_docs_serves_only_its_own_files(client):
    assert client.get("/docs/manage.py").status_code == 404
    assert client.get("/docs/../manage.py").status_code == 404
    assert client.get("/docs/%2e%2e/registry/openapi.py").status_code == 404
    assert client.get("/docs/index.html").status_code == 404  # the page is /docs
    response = client.get("/docs/nope.js")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_docs_assets_ship_with_the_package():
    files = sorted(p.name for p in DOCS_DIR.iterdir() if p.is_file())
    assert files == sorted(["index.html", *DOCS_ASSETS])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["registry"]
    for name in files:
        relative = f"static/docs/{name}"
        assert any(fnmatch.fnmatch(relative, g) for g in globs), relative
