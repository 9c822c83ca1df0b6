"""Open Inference Protocol (KServe V2 / Triton HTTP) through the Flask test client.

Real fitted models, real storage and database. Covers health and metadata, model readiness,
inference (JSON nested and flat, FP64/FP32/INT, rows and per-feature columns, predict_proba,
BYTES labels), the binary tensor extension built by hand, version selection (number, alias,
default alias), errors as `{"error": ...}` with the right status (including 401/403), the
repository extension and exact statistics counters.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import struct
import threading
import time
import uuid
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from registry import auth
from registry.errors import DependencyUnavailable
from tests.conftest import fit_classifier, fit_linear, joblib_bytes, make_config
from tests.helpers import register

ROWS = np.random.default_rng(7).random((4, 3)).round(6)
COLUMNS = ["a", "b", "c"]
HEADER_LENGTH = "Inference-Header-Content-Length"


# ---- models, fitted once per session ------------------------------------------------------


@cache
def linear(seed: int = 0, offset: float = 0.0):
    return fit_linear(3, seed=seed, offset=offset)


@cache
def linear_artifact(seed: int = 0, offset: float = 0.0) -> bytes:
    return joblib_bytes(linear(seed, offset))


@cache
def classifier():
    return fit_classifier(4, seed=0)  # string labels "high" / "low", has predict_proba


@cache
def int_classifier():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    X = rng.random((40, 3))
    return LogisticRegression().fit(X, (X[:, 1] > 0.5).astype(np.int64) * 7)


@cache
def frame_linear():
    """Fitted on a DataFrame: it has feature names a, b, c and wants a DataFrame."""
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame(np.random.default_rng(3).random((20, 3)), columns=COLUMNS)
    return LinearRegression().fit(X, X["a"] + 2.0 * X["b"] - 3.0 * X["c"] + 0.5)


@cache
def colors():
    """A string column and a number column; refuses unknown colors."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = pd.DataFrame(
        {"color": ["red", "green", "blue"] * 2, "size": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
    )
    encode = ColumnTransformer(
        [("color", OneHotEncoder(handle_unknown="error"), ["color"])], remainder="passthrough"
    )
    return Pipeline([("encode", encode), ("fit", LinearRegression())]).fit(X, X["size"] * 2)


# ---- apps and request helpers -------------------------------------------------------------


def build_app(path: Path, **overrides: Any):
    from manage import create_app

    application = create_app(make_config(path, **overrides))
    assert "v2" in application.blueprints
    return application


@pytest.fixture
def make_app(tmp_path):
    apps = []

    def build(**overrides: Any):
        application = build_app(tmp_path / uuid.uuid4().hex[:8], **overrides)
        apps.append(application)
        return application

    yield build
    for application in apps:
        application.extensions["modelreg"].engine.dispose()


@pytest.fixture
def v2(make_app):
    return make_app().test_client()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One app for read-only tests: lin (3 features), clf (4, string labels), frame (a, b, c),
    colors (color: string, size: double), ints (3 features, int labels)."""
    application = build_app(tmp_path_factory.mktemp("v2"))
    client = application.test_client()
    reg(client, "lin", linear_artifact())
    reg(client, "clf", joblib_bytes(classifier()))
    reg(client, "frame", joblib_bytes(frame_linear()))
    reg(
        client,
        "colors",
        joblib_bytes(colors()),
        input_example=[{"color": "red", "size": 1.0}],
    )
    reg(client, "ints", joblib_bytes(int_classifier()))
    yield client
    application.extensions["modelreg"].engine.dispose()


def reg(client, name: str, artifact: bytes, **meta: Any) -> dict[str, Any]:
    response = register(client, name, artifact, meta)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def promote(client, name: str, version: int, alias: str = "production") -> None:
    response = client.post(f"/models/{name}/versions/{version}/promote", json={"alias": alias})
    assert response.status_code == 200, response.get_data(as_text=True)


def tensor(data: Any, shape: list[int], datatype: str = "FP64", name: str = "input") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def infer(client, name: str, body: Any, version: str | None = None, **kwargs: Any):
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    if isinstance(body, (bytes, str)):
        return client.post(path, data=body, **kwargs)
    return client.post(path, json=body, **kwargs)


def ok(response) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def error(response, status: int) -> str:
    """Assert a V2 error: the status, `{"error": "<message>"}` as application/json."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json", response.headers["Content-Type"]
    body = response.get_json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


def output(body: dict[str, Any], name: str = "predict") -> np.ndarray:
    (entry,) = [o for o in body["outputs"] if o["name"] == name]
    return np.asarray(entry["data"]).reshape(entry["shape"])


def rows_body(X: np.ndarray, datatype: str = "FP64", flat: bool = False, **extra: Any) -> dict:
    data = X.reshape(-1).tolist() if flat else X.tolist()
    return {"inputs": [tensor(data, list(X.shape), datatype)], **extra}


def split_binary(response) -> tuple[dict[str, Any], bytes]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/octet-stream"
    size = int(response.headers[HEADER_LENGTH])
    return json.loads(response.data[:size]), response.data[size:]


def binary_outputs(header: dict[str, Any], blob: bytes) -> dict[str, np.ndarray]:
    """Decode a binary response the way a client does (offsets in output order)."""
    dtypes = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "BOOL": "?"}
    out, offset = {}, 0
    for entry in header["outputs"]:
        size = entry["parameters"]["binary_data_size"]
        chunk = blob[offset : offset + size]
        offset += size
        if entry["datatype"] == "BYTES":
            values, pos = [], 0
            while pos < len(chunk):
                (length,) = struct.unpack_from("<I", chunk, pos)
                values.append(chunk[pos + 4 : pos + 4 + length].decode())
                pos += 4 + length
            array = np.array(values, dtype=object)
        else:
            array = np.frombuffer(chunk, dtype=dtypes[entry["datatype"]])
        out[entry["name"]] = array.reshape(entry["shape"])
    assert offset == len(blob)
    return out


def bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def binary_request(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {HEADER_LENGTH: str(len(head))}


def blob_path(app, sha256: str) -> Path:
    return Path(app.config["INSTANCE_PATH"]) / "artifacts" / "sha256" / sha256[:2] / sha256


# ---- server --------------------------------------------------------------------------------


def test_server_metadata_live_and_ready(shared):
    body = ok(shared.get("/v2"))
    assert body == {
        "name": "modelreg",
        "version": metadata.version("modelreg"),
        "extensions": ["binary_tensor_data", "model_repository", "statistics"],
    }
    assert ok(shared.get("/v2/health/live")) == {"live": True}
    assert ok(shared.get("/v2/health/ready")) == {"ready": True}


def test_ready_is_503_when_the_database_does_not_answer(make_app, monkeypatch):
    application = make_app()
    client = application.test_client()

    def down(**kwargs: Any):
        raise DependencyUnavailable("the registry database is unavailable")

    services = application.extensions["modelreg"]
    monkeypatch.setitem(application.extensions, "modelreg", dataclasses.replace(services, uow=down))
    response = client.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.get_json()["ready"] is False
    assert ok(client.get("/v2/health/live")) == {"live": True}


def test_ready_answers_within_the_lookup_timeout_when_the_database_hangs(make_app, monkeypatch):
    """A database that accepts the connection and never answers: readiness is the bounded
    /readyz check, so the probe gets 503 in REGISTRY_LOOKUP_TIMEOUT, not after the hang."""
    application = make_app(REGISTRY_LOOKUP_TIMEOUT=0.3)
    client = application.test_client()
    released = threading.Event()

    def hangs(**kwargs: Any):
        released.wait(10)
        raise DependencyUnavailable("the registry database is unavailable")

    services = application.extensions["modelreg"]
    monkeypatch.setitem(
        application.extensions, "modelreg", dataclasses.replace(services, uow=hangs)
    )
    try:
        started = time.monotonic()
        response = client.get("/v2/health/ready")
        elapsed = time.monotonic() - started
    finally:
        released.set()
    assert response.status_code == 503
    assert response.get_json()["ready"] is False
    assert elapsed < 5, f"the probe waited {elapsed:.1f}s for a hanging database"


# ---- model metadata and readiness -----------------------------------------------------------


def test_model_metadata(shared):
    response = shared.get("/v2/models/lin")
    body = ok(response)
    assert response.headers["X-Model-Version"] == "1"
    assert body["name"] == "lin"
    assert body["versions"] == ["1"]
    assert body["platform"] == "sklearn_joblib"
    assert body["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 3]}]
    assert body["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]

    clf = ok(shared.get("/v2/models/clf/versions/1"))
    assert clf["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert clf["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    ints = ok(shared.get("/v2/models/ints"))
    assert ints["outputs"][0] == {"name": "predict", "datatype": "INT64", "shape": [-1]}

    frame = ok(shared.get("/v2/models/frame/versions/latest"))
    assert frame["parameters"]["feature_names"] == COLUMNS


def test_metadata_lists_ready_versions_as_strings(v2):
    for seed in range(3):
        reg(v2, "m", linear_artifact(seed))
    response = v2.patch("/models/m/versions/2", json={"status": "archived"})
    assert response.status_code == 200, response.get_data(as_text=True)
    promote(v2, "m", 1)
    body = ok(v2.get("/v2/models/m"))
    assert body["versions"] == ["1", "3"]
    assert body["parameters"]["version"] == "1"  # production
    assert ok(v2.get("/v2/models/m/versions/3"))["parameters"]["version"] == "3"


def test_model_ready(make_app):
    application = make_app()
    client = application.test_client()
    reg(client, "m", linear_artifact())
    record = reg(client, "m", linear_artifact(1))
    response = client.get("/v2/models/m/versions/1/ready")
    assert ok(response) == {"name": "m", "version": "1", "ready": True}
    assert "version 9" in error(client.get("/v2/models/m/versions/9/ready"), 404)
    error(client.get("/v2/models/m/versions/staging/ready"), 404)
    error(client.get("/v2/models/nope/ready"), 404)

    # Version 2 (latest, so the default) exists, but its bytes are damaged in storage.
    blob_path(application, record["sha256"]).write_bytes(b"not the model")
    for path in ("/v2/models/m/ready", "/v2/models/m/versions/2/ready"):
        response = client.get(path)
        assert response.status_code == 503, path
        body = response.get_json()
        assert body["ready"] is False and body["version"] == "2"
        assert "integrity" in body["error"]


def test_onnx_metadata_and_fp32_inference(v2):
    to_onnx = pytest.importorskip("skl2onnx").to_onnx
    model = linear(4, 2.0)
    X = np.random.default_rng(4).random((5, 3)).astype(np.float32)
    reg(v2, "onnx", to_onnx(model, X[:1]).SerializeToString(), format="onnx")
    body = ok(v2.get("/v2/models/onnx"))
    assert body["platform"] == "onnxruntime_onnx"
    assert body["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
    assert body["outputs"] == [{"name": "predict", "datatype": "FP32", "shape": [-1]}]
    result = ok(infer(v2, "onnx", rows_body(X, "FP32")))
    assert result["outputs"][0]["datatype"] == "FP32"
    assert np.allclose(output(result), model.predict(X), rtol=1e-4, atol=1e-5)


# ---- inference ------------------------------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_infer_rows(shared, datatype, flat):
    X = ROWS.astype(np.float32) if datatype == "FP32" else ROWS
    response = infer(shared, "lin", rows_body(X, datatype, flat, id="req-1"))
    body = ok(response)
    assert response.headers["X-Model-Version"] == "1"
    assert body["model_name"] == "lin"
    assert body["model_version"] == "1"
    assert body["id"] == "req-1"
    (entry,) = body["outputs"]
    assert entry["name"] == "predict"
    assert entry["datatype"] == "FP64"
    assert entry["shape"] == [4]
    expected = linear().predict(X.astype(np.float64))
    assert np.allclose(entry["data"], expected, rtol=1e-6)


def test_infer_integer_inputs_and_a_single_row(shared):
    X = np.array([[1, 2, 3]])
    body = ok(infer(shared, "lin", rows_body(X, "INT32")))
    assert np.allclose(output(body), linear().predict(X.astype(float)))


def test_infer_dataframe_model_with_one_row_tensor(shared):
    body = ok(infer(shared, "frame", rows_body(ROWS)))
    expected = frame_linear().predict(pd.DataFrame(ROWS, columns=COLUMNS))
    assert np.allclose(output(body), expected)


def test_column_inputs_by_feature_name(shared):
    expected = frame_linear().predict(pd.DataFrame(ROWS, columns=COLUMNS))
    columns = {name: ROWS[:, j] for j, name in enumerate(COLUMNS)}
    inputs = [
        tensor(columns["c"].tolist(), [4], name="c"),  # any order
        tensor(columns["a"].reshape(4, 1).tolist(), [4, 1], name="a"),  # [N, 1] too
        tensor(columns["b"].astype(np.float32).tolist(), [4], "FP32", name="b"),
    ]
    body = ok(infer(shared, "frame", {"inputs": inputs}))
    assert np.allclose(output(body), expected, rtol=1e-6)

    # content_type "pd" takes a single input as a column too.
    one = ok(
        infer(
            shared,
            "colors",
            {
                "parameters": {"content_type": "pd"},
                "inputs": [
                    tensor(["green", "blue"], [2], "BYTES", name="color"),
                    tensor([2.5, 7.0], [2], name="size"),
                ],
            },
        )
    )
    frame = pd.DataFrame({"color": ["green", "blue"], "size": [2.5, 7.0]})
    assert np.allclose(output(one), colors().predict(frame))


def test_column_input_errors(shared):
    message = error(
        infer(shared, "frame", {"inputs": [tensor([1.0], [1], name=x) for x in ("a", "b", "z")]}),
        400,
    )
    assert "'c'" in message and "'z'" in message
    message = error(
        infer(shared, "lin", {"inputs": [tensor([1.0], [1], name=x) for x in ("a", "b", "c")]}),
        400,
    )
    assert "feature names are unknown" in message
    uneven = [tensor([1.0, 2.0], [2], name="a"), tensor([1.0], [1], name="b")]
    uneven.append(tensor([1.0], [1], name="c"))
    assert "different lengths" in error(infer(shared, "frame", {"inputs": uneven}), 400)
    # A number where the model wants a string is caught before the model sees it.
    wrong = [tensor([3.0], [1], name="color"), tensor([1.0], [1], name="size")]
    assert "color" in error(infer(shared, "colors", {"inputs": wrong}), 400)
    # An unknown category: the model itself refuses it; still the client's error.
    purple = [tensor(["purple"], [1], "BYTES", name="color"), tensor([1.0], [1], name="size")]
    assert "could not predict" in error(infer(shared, "colors", {"inputs": purple}), 400)


def test_predict_proba_and_string_labels(shared):
    X = np.random.default_rng(1).random((5, 4))
    model = classifier()
    body = ok(
        infer(
            shared,
            "clf",
            rows_body(X, outputs=[{"name": "predict_proba"}, {"name": "predict"}]),
        )
    )
    assert [o["name"] for o in body["outputs"]] == ["predict_proba", "predict"]
    proba = body["outputs"][0]
    assert proba["datatype"] == "FP64" and proba["shape"] == [5, 2]
    assert np.allclose(output(body, "predict_proba"), model.predict_proba(X))
    labels = body["outputs"][1]
    assert labels["datatype"] == "BYTES" and labels["shape"] == [5]
    assert labels["data"] == model.predict(X).tolist()

    ints = ok(infer(shared, "ints", rows_body(ROWS)))
    assert ints["outputs"][0]["datatype"] == "INT64"
    assert output(ints).tolist() == int_classifier().predict(ROWS).tolist()


def test_output_errors(shared):
    only_proba = rows_body(ROWS, outputs=[{"name": "predict_proba"}])
    assert "no predict_proba" in error(infer(shared, "lin", only_proba), 400)
    assert "unknown output" in error(
        infer(shared, "lin", rows_body(ROWS, outputs=[{"name": "score"}])), 400
    )
    twice = rows_body(ROWS, outputs=[{"name": "predict"}, {"name": "predict"}])
    error(infer(shared, "lin", twice), 400)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": [tensor(ROWS.tolist(), [4, 2])]}, "holds 8 elements but data has 12"),
        ({"inputs": [tensor(ROWS.ravel().tolist(), [3, 4])]}, "expected 3 features"),
        ({"inputs": [tensor([1.0, 2.0, 3.0], [3])]}, "expected shape [N, 3]"),
        ({"inputs": [tensor([[1, 2, 3]], [1, 3], "FP128")]}, "unsupported datatype"),
        ({"inputs": [tensor([[1, 2, 3]], [1, 3], None)]}, "unsupported datatype"),
        ({"inputs": [tensor([["1", "2", "3"]], [1, 3])]}, "must be numbers"),
        ({"inputs": [tensor([[1.5, 2, 3]], [1, 3], "INT64")]}, "must be integers"),
        ({"inputs": [tensor([[300, 2, 3]], [1, 3], "INT8")]}, "out of range"),
        ({"inputs": [tensor([[1e39, 2, 3]], [1, 3], "FP32")]}, "out of range"),
        ({"inputs": [tensor([[True, False, True]], [1, 3], "BOOL")]}, "boolean"),
        ({"inputs": [tensor([[1, [2], 3]], [1, 3])]}, "mixes lists and values"),
        ({"inputs": [tensor([[1, None, 3]], [1, 3])]}, "nulls"),
        ({"inputs": [tensor([], [0, 3])]}, "no rows"),
        ({"inputs": [tensor([[1, 2, 3]], [1, -3])]}, "shape"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64"}]}, "'data'"),
        ({"inputs": []}, "inputs"),
        ({"instances": [[1, 2, 3]]}, "inputs"),
        ([1, 2, 3], "JSON object"),
        ({"inputs": [tensor([[1, 2, 3]], [1, 3]), tensor([[1, 2, 3]], [1, 3])]}, "twice"),
        ({"inputs": [tensor([[1, 2, 3]], [1, 3])], "outputs": {"name": "x"}}, "outputs"),
        ({"inputs": [tensor([[1, 2, 3]], [1, 3])], "parameters": []}, "parameters"),
        (b'{"inputs": [', "not valid JSON"),
    ],
)
def test_bad_requests_are_400(shared, body, fragment):
    message = error(infer(shared, "lin", body), 400)
    assert fragment in message, message


def test_too_large_body_is_413(make_app):
    client = make_app(MAX_PREDICT_BODY_BYTES=2_000).test_client()
    reg(client, "m", linear_artifact())
    error(infer(client, "m", rows_body(np.ones((200, 3)))), 413)


def test_unknown_model_and_version_are_404(shared):
    assert "not found" in error(infer(shared, "nope", rows_body(ROWS)), 404)
    assert "version 7" in error(infer(shared, "lin", rows_body(ROWS), version="7"), 404)
    error(infer(shared, "lin", rows_body(ROWS), version="staging"), 404)
    error(infer(shared, "lin", rows_body(ROWS), version="Not-A-Ref"), 404)
    error(shared.get("/v2/models/nope"), 404)
    error(shared.get("/v2/models/lin/versions/7"), 404)


def test_a_wrong_method_on_a_v2_route_is_405_with_allow(shared):
    message = error(shared.get("/v2/models/lin/infer"), 405)
    assert "GET is not allowed" in message
    assert "POST" in shared.get("/v2/models/lin/infer").headers["Allow"]
    versioned = shared.put("/v2/models/lin/versions/1/infer", json={})
    error(versioned, 405)
    assert "POST" in versioned.headers["Allow"].split(", ")
    ready = shared.post("/v2/models/lin/ready")
    error(ready, 405)
    assert "GET" in ready.headers["Allow"].split(", ")
    assert "POST" not in ready.headers["Allow"].split(", ")
    error(shared.delete("/v2/health/live"), 405)
    # a path that no route has, whatever the method, stays a 404
    assert "no V2 endpoint" in error(shared.get("/v2/models/lin/config"), 404)
    assert "no V2 endpoint" in error(shared.post("/v2/nothing/here"), 404)


def test_version_by_number_and_by_alias(v2):
    reg(v2, "m", linear_artifact(0))
    reg(v2, "m", linear_artifact(1, 10.0))
    promote(v2, "m", 1)
    promote(v2, "m", 2, alias="staging")
    for ref, version, model in (
        ("1", 1, linear(0)),
        ("2", 2, linear(1, 10.0)),
        ("production", 1, linear(0)),
        ("staging", 2, linear(1, 10.0)),
        ("latest", 2, linear(1, 10.0)),
    ):
        response = infer(v2, "m", rows_body(ROWS), version=ref)
        body = ok(response)
        assert body["model_version"] == str(version), ref
        assert response.headers["X-Model-Version"] == str(version)
        assert np.allclose(output(body), model.predict(ROWS)), ref


def test_default_alias_is_production_else_latest(make_app):
    # Refresh 0: "no production alias" is not remembered, so the promotion shows at once.
    client = make_app(ALIAS_REFRESH_SECONDS=0.0).test_client()
    reg(client, "m", linear_artifact(0))
    reg(client, "m", linear_artifact(1, 10.0))
    body = ok(infer(client, "m", rows_body(ROWS)))
    assert body["model_version"] == "2"  # no production yet: latest
    assert np.allclose(output(body), linear(1, 10.0).predict(ROWS))
    assert ok(client.get("/v2/models/m"))["parameters"]["version"] == "2"

    promote(client, "m", 1)
    body = ok(infer(client, "m", rows_body(ROWS)))
    assert body["model_version"] == "1"
    assert np.allclose(output(body), linear(0).predict(ROWS))
    assert ok(client.get("/v2/models/m"))["parameters"]["version"] == "1"
    reg(client, "m", linear_artifact(2))
    assert ok(infer(client, "m", rows_body(ROWS)))["model_version"] == "1"  # still production


def test_missing_production_is_remembered_for_the_refresh_interval(make_app):
    client = make_app(ALIAS_REFRESH_SECONDS=0.3).test_client()
    reg(client, "m", linear_artifact(0))
    reg(client, "m", linear_artifact(1))
    assert ok(infer(client, "m", rows_body(ROWS)))["model_version"] == "2"
    promote(client, "m", 1)
    deadline = time.monotonic() + 5
    while ok(infer(client, "m", rows_body(ROWS)))["model_version"] != "1":
        assert time.monotonic() < deadline, "the promotion was never seen"
        time.sleep(0.05)


def test_gzip_request_body(shared):
    body = gzip.compress(json.dumps(rows_body(ROWS)).encode())
    result = ok(infer(shared, "lin", body, headers={"Content-Encoding": "gzip"}))
    assert np.allclose(output(result), linear().predict(ROWS))
    error(infer(shared, "lin", b"garbage", headers={"Content-Encoding": "gzip"}), 400)
    error(infer(shared, "lin", b"{}", headers={"Content-Encoding": "br"}), 400)


# ---- binary tensor extension ----------------------------------------------------------------


def test_binary_request_and_binary_response(shared):
    raw = ROWS.astype("<f8").tobytes()
    header = {
        "id": "bin",
        "inputs": [
            {
                "name": "input",
                "shape": [4, 3],
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
    }
    body, headers = binary_request(header, raw)
    response = infer(shared, "lin", body, headers=headers)
    meta, blob = split_binary(response)
    assert response.headers["X-Model-Version"] == "1"
    assert meta["id"] == "bin"
    (entry,) = meta["outputs"]
    assert entry["parameters"] == {"binary_data_size": 4 * 8}
    assert "data" not in entry
    values = binary_outputs(meta, blob)["predict"]
    assert values.shape == (4,)
    assert np.allclose(values, linear().predict(ROWS))


def test_binary_fp32_input_packed_with_struct_and_json_output(shared):
    values = ROWS.astype(np.float32).ravel().tolist()
    raw = struct.pack(f"<{len(values)}f", *values)
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [4, 3],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    body, headers = binary_request(header, raw)
    response = infer(shared, "lin", body, headers=headers)
    result = ok(response)  # no binary output was asked for: plain JSON
    assert HEADER_LENGTH not in response.headers
    expected = linear().predict(np.array(values, dtype=np.float32).reshape(4, 3).astype(float))
    assert np.allclose(output(result), expected, rtol=1e-6)


def test_binary_data_output_parameter_and_mixed_outputs(shared):
    X = np.random.default_rng(2).random((3, 4))
    model = classifier()
    meta, blob = split_binary(
        infer(shared, "clf", rows_body(X, parameters={"binary_data_output": True}))
    )
    assert [o["name"] for o in meta["outputs"]] == ["predict"]  # the default output
    assert binary_outputs(meta, blob)["predict"].tolist() == model.predict(X).tolist()

    # One output binary, the other JSON; per-output binary_data beats binary_data_output.
    mixed = rows_body(
        X,
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "predict", "parameters": {"binary_data": False}},
            {"name": "predict_proba"},
        ],
    )
    meta, blob = split_binary(infer(shared, "clf", mixed))
    predict_entry, proba_entry = meta["outputs"]
    assert predict_entry["data"] == model.predict(X).tolist()
    assert "parameters" not in predict_entry
    size = proba_entry["parameters"]["binary_data_size"]
    assert size == len(blob) == 3 * 2 * 8
    proba = np.frombuffer(blob, "<f8").reshape(proba_entry["shape"])
    assert np.allclose(proba, model.predict_proba(X))


def test_bytes_labels_round_trip(shared):
    """String class labels come back as BYTES: JSON strings, or length-prefixed raw bytes."""
    X = np.random.default_rng(3).random((6, 4))
    expected = classifier().predict(X).tolist()
    assert set(expected) == {"high", "low"}
    as_json = ok(infer(shared, "clf", rows_body(X)))
    assert as_json["outputs"][0]["data"] == expected
    as_binary = rows_body(X, outputs=[{"name": "predict", "parameters": {"binary_data": True}}])
    meta, blob = split_binary(infer(shared, "clf", as_binary))
    assert meta["outputs"][0]["datatype"] == "BYTES"
    assert blob == bytes_tensor(expected)
    assert binary_outputs(meta, blob)["predict"].tolist() == expected


def test_binary_bytes_and_json_inputs_together(shared):
    """A BYTES column sent as binary (4-byte lengths) with an FP64 column sent as JSON."""
    colors_raw = bytes_tensor(["green", "blue", "red"])
    size_raw = np.array([2.5, 7.0, 1.0], "<f8").tobytes()
    header = {
        "inputs": [
            {
                "name": "color",
                "shape": [3],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(colors_raw)},
            },
            {
                "name": "size",
                "shape": [3, 1],
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(size_raw)},
            },
        ],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
    }
    body, headers = binary_request(header, colors_raw, size_raw)
    meta, blob = split_binary(infer(shared, "colors", body, headers=headers))
    frame = pd.DataFrame({"color": ["green", "blue", "red"], "size": [2.5, 7.0, 1.0]})
    assert np.allclose(binary_outputs(meta, blob)["predict"], colors().predict(frame))


def _binary_input(size: int, datatype: str = "FP64", shape: list[int] | None = None) -> dict:
    return {
        "name": "input",
        "shape": shape or [1, 3],
        "datatype": datatype,
        "parameters": {"binary_data_size": size},
    }


@pytest.mark.parametrize(
    ("header", "chunks", "length", "fragment"),
    [
        ({"inputs": [_binary_input(24)]}, [b"\0" * 16], None, "only 16 bytes"),
        ({"inputs": [_binary_input(16)]}, [b"\0" * 16], None, "24 bytes"),
        ({"inputs": [_binary_input(24)]}, [b"\0" * 30], None, "6 bytes"),
        ({"inputs": [_binary_input(24)]}, [b"\0" * 24], "abc", "integer"),
        ({"inputs": [_binary_input(24)]}, [b"\0" * 24], "100000", "body has"),
        ({"inputs": [_binary_input(24)]}, [b"\0" * 24], "0", "body has"),
        (
            {"inputs": [_binary_input(24) | {"data": [[1, 2, 3]]}]},
            [b"\0" * 24],
            None,
            "not both",
        ),
        ({"inputs": [_binary_input(24)]}, [np.full(3, np.nan).tobytes()], None, "finite"),
        ({"inputs": [_binary_input(6, "BYTES", [1])]}, [b"\5\0\0\0ab"], None, "truncated"),
        ({"inputs": [_binary_input(2, "BYTES", [1])]}, [b"\5\0"], None, "ends before"),
        (
            {"inputs": [_binary_input(6, "BYTES", [1])]},
            [b"\1\0\0\0ab"],
            None,
            "more than",
        ),
        ({"inputs": [_binary_input(5, "BYTES", [1])]}, [b"\1\0\0\0\xff"], None, "UTF-8"),
    ],
)
def test_bad_binary_requests_are_400(shared, header, chunks, length, fragment):
    body, headers = binary_request(header, *chunks)
    if length is not None:
        headers[HEADER_LENGTH] = length
    message = error(infer(shared, "lin", body, headers=headers), 400)
    assert fragment in message, message


def test_binary_input_without_the_header_length_is_400(shared):
    header = {"inputs": [_binary_input(24)]}
    message = error(infer(shared, "lin", json.dumps(header)), 400)
    assert HEADER_LENGTH in message


# ---- repository extension ----------------------------------------------------------------


def test_repository_index_load_and_unload(make_app):
    application = make_app()
    client = application.test_client()
    reg(client, "m", linear_artifact(0))
    reg(client, "m", linear_artifact(1))
    promote(client, "m", 1)
    broken = reg(client, "broken", linear_artifact(2))
    # The promotion loaded version 1 (its pre-promotion check): unload it first.
    assert ok(client.post("/v2/repository/index")) == [
        {"name": "m", "version": "1", "state": "READY", "reason": ""}
    ]
    assert ok(client.post("/v2/repository/models/m/unload"))["evicted"] == 1
    assert ok(client.post("/v2/repository/index")) == []

    loaded = ok(client.post("/v2/repository/models/m/load"))
    assert loaded["version"] == "1" and loaded["state"] == "READY"  # the default alias
    cached = [(e["name"], e["version"]) for e in ok(client.get("/serving/cache"))["models"]]
    assert cached == [("m", 1)]

    blob_path(application, broken["sha256"]).write_bytes(b"tampered")
    assert "integrity" in error(client.post("/v2/repository/models/broken/load"), 503)
    error(client.post("/v2/repository/models/nope/load"), 404)

    index = ok(client.post("/v2/repository/index", json={}))
    reason = index[0].pop("reason")
    assert index[0] == {"name": "broken", "version": "1", "state": "UNAVAILABLE"}
    assert reason.startswith("ArtifactIntegrityError: ")
    index[0]["reason"] = reason
    assert index[1] == {"name": "m", "version": "1", "state": "READY", "reason": ""}
    assert ok(client.post("/v2/repository/index", json={"ready": True})) == [index[1]]
    error(client.post("/v2/repository/index", json={"ready": "yes"}), 400)
    error(client.post("/v2/repository/index", data=b"[1"), 400)

    unloaded = ok(client.post("/v2/repository/models/m/unload"))
    assert unloaded == {"name": "m", "version": "1", "evicted": 1}
    assert ok(client.get("/serving/cache"))["models"] == []
    assert ok(client.post("/v2/repository/index", json={"ready": True})) == []
    assert ok(client.post("/v2/repository/models/m/unload"))["evicted"] == 0


# ---- statistics extension ------------------------------------------------------------------


def test_statistics_are_exact(make_app):
    client = make_app().test_client()
    reg(client, "m", linear_artifact(0))
    reg(client, "m", linear_artifact(1))
    reg(client, "idle", linear_artifact(2))
    before_ms = int(time.time() * 1000)
    n = 5
    for _ in range(n):
        ok(infer(client, "m", rows_body(ROWS[:2]), version="1"))
    error(infer(client, "m", {"inputs": [tensor([1.0], [2, 3])]}, version="1"), 400)
    ok(infer(client, "m", rows_body(ROWS), version="2"))
    error(infer(client, "nope", rows_body(ROWS)), 404)  # no such model: counted nowhere
    error(infer(client, "m", rows_body(ROWS), version="9"), 404)  # nor an unknown version

    (v1,) = ok(client.get("/v2/models/m/versions/1/stats"))["model_stats"]
    assert v1["name"] == "m" and v1["version"] == "1"
    assert v1["execution_count"] == n
    assert v1["inference_count"] == 2 * n  # rows
    assert before_ms <= v1["last_inference"] <= int(time.time() * 1000)
    stats = v1["inference_stats"]
    assert set(stats) == {
        "success", "fail", "queue", "compute_input", "compute_infer", "compute_output"
    }  # fmt: skip
    assert stats["success"]["count"] == n
    assert stats["fail"]["count"] == 1 and stats["fail"]["ns"] > 0
    for kind in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[kind]["count"] == n, kind
        assert 0 < stats[kind]["ns"] <= stats["success"]["ns"], kind

    both = ok(client.get("/v2/models/m/stats"))["model_stats"]
    assert [(s["version"], s["inference_stats"]["success"]["count"]) for s in both] == [
        ("1", n),
        ("2", 1),
    ]
    everything = ok(client.get("/v2/models/stats"))["model_stats"]
    assert [(s["name"], s["version"]) for s in everything] == [("m", "1"), ("m", "2")]

    # A model that exists but never answered: zeros for its default version.
    (idle,) = ok(client.get("/v2/models/idle/stats"))["model_stats"]
    assert idle["version"] == "1" and idle["execution_count"] == 0
    assert idle["last_inference"] == 0
    assert (
        ok(client.get("/v2/models/m/versions/latest/stats"))["model_stats"][0]["execution_count"]
        == 1
    )
    error(client.get("/v2/models/nope/stats"), 404)
    error(client.get("/v2/models/m/versions/9/stats"), 404)


# ---- auth ----------------------------------------------------------------------------------


def test_auth_errors_are_v2_errors(make_app):
    application = make_app(AUTH_DISABLED=False)
    client = application.test_client()
    uow = application.extensions["modelreg"].uow
    secrets = {
        role: auth.create_token(uow, name=f"t-{role}", role=role, actor="test")[0]
        for role in ("reader", "publisher", "operator")
    }
    scoped, _ = auth.create_token(
        uow, name="t-other", role="operator", actor="test", models=["other"]
    )

    def bearer(secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    reg_response = register(client, "m", linear_artifact(), headers=bearer(secrets["publisher"]))
    assert reg_response.status_code == 201, reg_response.get_data(as_text=True)

    # Public: no token needed.
    for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        assert client.get(path).status_code == 200, path

    response = infer(client, "m", rows_body(ROWS))
    assert "Bearer" in error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    error(infer(client, "m", rows_body(ROWS), headers=bearer("mr_not-a-token")), 401)
    error(client.get("/v2/models/m"), 401)
    error(client.get("/v2/models/stats"), 401)
    error(client.post("/v2/repository/index"), 401)

    reader = bearer(secrets["reader"])
    ok(infer(client, "m", rows_body(ROWS), headers=reader))
    ok(client.get("/v2/models/m", headers=reader))
    ok(client.get("/v2/models/m/ready", headers=reader))
    ok(client.post("/v2/repository/index", headers=reader))
    assert "operator" in error(client.post("/v2/repository/models/m/load", headers=reader), 403)
    error(client.post("/v2/repository/models/m/unload", headers=reader), 403)

    operator = bearer(secrets["operator"])
    ok(client.post("/v2/repository/models/m/load", headers=operator))
    ok(client.post("/v2/repository/models/m/unload", headers=operator))

    # A token limited to other models: 403 on this one, and it sees nothing of it in lists.
    error(infer(client, "m", rows_body(ROWS), headers=bearer(scoped)), 403)
    ok(client.post("/v2/repository/models/m/load", headers=operator))
    assert ok(client.post("/v2/repository/index", headers=bearer(scoped))) == []
    assert ok(client.get("/v2/models/stats", headers=bearer(scoped))) == {"model_stats": []}
    assert len(ok(client.post("/v2/repository/index", headers=reader))) == 1
