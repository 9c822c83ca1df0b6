"""Response hardening, logs, metrics format, and values that must never be stored."""

from __future__ import annotations

import json
import logging
import re

import pytest

from registry.logs import JsonFormatter
from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.helpers import problem, register

SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _deep(levels: int):
    value = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "metadata",
    [
        {"params": {"p": _deep(300)}},
        {"tags": {"k": "v"}, "source": {"run": "r"}, "params": {"a": {"b": _deep(40)}}},
        {"input_example": [[_deep(300), 1, 2]]},
        {"input_example": [[[1], 2, 3]]},
        {"input_example": [[{"x": 1}, 2, 3]]},
    ],
)
def test_metadata_that_could_not_be_served_back_is_refused_and_nothing_stored(client, metadata):
    response = register(client, "m", joblib_bytes(fit_linear()), metadata)
    assert response.status_code == 422, response.get_data(as_text=True)[:300]
    field = next(iter(problem(response)["errors"]))
    assert field.startswith("metadata.")
    assert client.get("/models/m").status_code == 404
    assert register(client, "m", joblib_bytes(fit_linear())).status_code == 201
    assert client.get("/models/m/versions").status_code == 200


def test_security_and_request_id_headers_on_every_response(sqlite_client):
    register(sqlite_client, "m", joblib_bytes(fit_linear()))
    responses = [
        sqlite_client.get("/healthz"),
        sqlite_client.get("/models"),
        sqlite_client.get("/models/missing"),  # an error
        sqlite_client.post("/models/m/1/predict", json={"instances": [[1, 2, 3]]}),
        sqlite_client.get("/models/m/versions/1/artifact"),
        sqlite_client.get("/metrics"),
        sqlite_client.get("/v2/models/m"),
        sqlite_client.get("/no/such/route"),
    ]
    for response in responses:
        for header, value in SECURITY.items():
            assert response.headers.get(header) == value, (response.request.path, header)
        assert response.headers["Cache-Control"]
        assert len(response.headers["X-Request-ID"]) >= 16
        # Auth is disabled in this app, so every response says so.
        assert response.headers["X-Modelreg-Warning"] == "authentication is disabled"
    echoed = sqlite_client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"


def test_no_warning_header_when_auth_is_on(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path, AUTH_DISABLED=False))
    response = app.test_client().get("/healthz")
    assert "X-Modelreg-Warning" not in response.headers


def test_access_log_lines_are_json_with_request_model_version_and_latency(sqlite_client, caplog):
    register(sqlite_client, "m", joblib_bytes(fit_linear()))
    caplog.set_level(logging.INFO, logger="modelreg.access")
    response = sqlite_client.post(
        "/models/m/1/predict", json={"instances": [[1, 2, 3]]}, headers={"X-Request-ID": "trace-42"}
    )
    assert response.status_code == 200
    record = next(r for r in caplog.records if r.name == "modelreg.access")
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "trace-42"
    assert (line["model"], line["version"], line["status"]) == ("m", "1", 200)
    assert line["method"] == "POST" and line["path"] == "/models/m/1/predict"
    assert line["latency_ms"] > 0 and line["level"] == "info"
    assert line["time"].endswith("Z")


def test_metrics_content_type_is_the_prometheus_text_format(sqlite_client):
    response = sqlite_client.get("/metrics")
    assert response.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
    assert "modelreg_http_requests_total" in response.get_data(as_text=True)


def test_a_missing_blob_is_503_naming_the_version_not_404(app, client):
    record = register(client, "m", joblib_bytes(fit_linear())).get_json()
    app.extensions["modelreg"].store.delete(f"sha256/{record['sha256'][:2]}/{record['sha256']}")
    predicted = client.post("/models/m/1/predict", json={"instances": [[1, 2, 3]]})
    assert predicted.status_code == 503
    assert "missing" in problem(predicted)["detail"] and problem(predicted)["errors"]["version"]
    downloaded = client.get("/models/m/versions/1/artifact")
    assert downloaded.status_code == 503
    failures = client.get("/serving/cache").get_json()["failures"]
    assert failures[0]["error"] == "ArtifactIntegrityError"


def test_alias_and_token_lists_are_paginated(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path))
    client = app.test_client()
    register(client, "m", joblib_bytes(fit_linear()))
    for alias in ("alpha", "beta", "gamma"):
        assert client.post("/models/m/versions/1/promote", json={"alias": alias}).status_code == 200
    first = client.get("/models/m/aliases?limit=2").get_json()
    second = client.get(f"/models/m/aliases?limit=2&cursor={first['next_cursor']}").get_json()
    assert [a["alias"] for a in first["aliases"] + second["aliases"]] == ["alpha", "beta", "gamma"]
    assert second["next_cursor"] is None
    for name in ("t1", "t2", "t3"):
        client.post("/tokens", json={"name": name, "role": "reader"})
    page = client.get("/tokens?limit=2").get_json()
    rest = client.get(f"/tokens?limit=2&cursor={page['next_cursor']}").get_json()
    assert [t["name"] for t in page["tokens"] + rest["tokens"]] == ["t1", "t2", "t3"]
    assert client.get("/tokens?limit=0").status_code == 422


def test_ranged_downloads_resume_an_artifact(client):
    artifact = joblib_bytes(fit_linear())
    register(client, "m", artifact)
    whole = client.get("/models/m/versions/1/artifact")
    assert whole.status_code == 200 and whole.data == artifact
    assert whole.headers["Accept-Ranges"] == "bytes"
    part = client.get("/models/m/versions/1/artifact", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.data == artifact[10:100]
    assert part.headers["Content-Range"] == f"bytes 10-99/{len(artifact)}"
    assert int(part.headers["Content-Length"]) == 90
    tail = client.get("/models/m/versions/1/artifact", headers={"Range": "bytes=-25"})
    assert tail.status_code == 206 and tail.data == artifact[-25:]
    rest = client.get("/models/m/versions/1/artifact", headers={"Range": "bytes=100-"})
    assert rest.data == artifact[100:]
    beyond = client.get(
        "/models/m/versions/1/artifact", headers={"Range": f"bytes={len(artifact) + 5}-"}
    )
    assert beyond.status_code == 416
    problem(beyond)


def _concrete(rule: str) -> str:
    """A path for a URL rule, naming things that exist in `_world`."""
    values = {"name": "m", "ref": "1", "version": "1", "filename": "docs.js"}
    return re.sub(r"<(?:[a-z]+:)?(\w+)>", lambda m: values.get(m.group(1), "x"), rule)


def _world(tmp_path, **overrides):
    from manage import create_app

    app = create_app(make_config(tmp_path, **overrides))
    client = app.test_client()
    return app, client


def test_every_get_route_answers_no_store(tmp_path):
    app, client = _world(tmp_path)
    register(client, "m", joblib_bytes(fit_linear()))
    rules = sorted({r.rule for r in app.url_map.iter_rules() if "GET" in r.methods})
    assert "/models/<name>/versions/<ref>/artifact" in rules and "/docs" in rules
    checked = []
    for rule in rules:
        path = _concrete(rule)
        for response in (
            client.get(path),
            client.get(path + "-missing"),
            client.get(path, headers={"Range": "bytes=0-9"}),
        ):
            assert response.headers.get("Cache-Control") == "no-store", (
                path,
                response.status_code,
                response.headers.get("Cache-Control"),
            )
            assert "Expires" not in response.headers, path
        checked.append(path)
    assert len(checked) == len(rules)


MLFLOW_PINGS = ("/ping", "/health")


@pytest.mark.parametrize("auth", [True, False], ids=["auth", "no-auth"])
def test_double_slashes_are_404_and_never_a_redirect_built_from_the_host(tmp_path, auth):
    app, client = _world(tmp_path, AUTH_DISABLED=not auth)
    rules = sorted({r.rule for r in app.url_map.iter_rules()})
    tried = 0
    for rule in rules:
        path = _concrete(rule)
        cuts = [i for i, c in enumerate(path) if c == "/"]
        for cut in cuts:
            doubled = path[:cut] + "/" + path[cut:]
            if doubled.startswith("//"):
                # A scheme-relative target is what a proxy or a raw client may send, but the
                # test client would read it as a host: build the environ by hand.
                environ = {"PATH_INFO": doubled, "HTTP_HOST": "evil.example"}
                responses = [
                    client.open(method=m, environ_overrides=environ) for m in ("GET", "POST")
                ]
            else:
                responses = [
                    client.open(doubled, method=m, headers={"Host": "evil.example"})
                    for m in ("GET", "POST")
                ]
            for response in responses:
                assert response.status_code == 404, (doubled, response.status_code)
                assert "Location" not in response.headers, (doubled, response.headers["Location"])
                body = response.get_json(silent=True) or {}
                if rule.startswith(("/v2", "/v1")) and "error" in body:
                    pass  # the V2 and V1 routes' own error shape
                elif "error_code" in body and ("invocations" in rule or rule in MLFLOW_PINGS):
                    assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"  # MLflow's shape
                else:
                    assert problem(response)["status"] == 404
                tried += 1
    assert tried > 100
