"""XGBoost and LightGBM models in their own file formats: registered, promoted and served
with the answers of the libraries' own predict; files that are not whole models of their
format are refused with nothing stored; a server without the library says which extra."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from tests.api.test_registry_api import stored_blobs
from tests.boosters import EXAMPLE, FILENAMES, X, file_bytes, model_for
from tests.helpers import problem, register

FORMATS = ["xgboost", "lightgbm"]
RTOL = 1e-5  # the libraries' own answers, float32 (XGBoost) or float64 (LightGBM)
ROWS_10K = np.random.default_rng(7).normal(size=(10_000, X.shape[1]))


def _register(client, fmt, model, name="price", **metadata):
    response = register(
        client,
        name,
        file_bytes(fmt, model),
        {"format": fmt, "input_example": EXAMPLE, **metadata},
        filename=FILENAMES[fmt],
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _predict(client, name, ref, rows, method="predict"):
    response = client.post(
        f"/models/{name}/{ref}/predict", json={"instances": rows.tolist(), "method": method}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.mark.parametrize("fmt", FORMATS)
def test_regressor_registers_promotes_and_answers_like_the_library(client, fmt):
    model = model_for(fmt, "regressor")
    record = _register(client, fmt, model)
    assert record["format"] == fmt
    signature = record["signature"]
    assert signature["n_features"] == X.shape[1]
    assert signature["methods"] == ["predict"]
    assert signature["objective"] == ("reg:squarederror" if fmt == "xgboost" else "regression")
    assert signature["allow_missing"] is True
    promoted = client.post("/models/price/versions/1/promote", json={"reason": "first"})
    assert promoted.status_code == 200, promoted.get_json()
    one = _predict(client, "price", "production", X[:1])
    assert one["version"] == 1
    np.testing.assert_allclose(one["predictions"], model.predict(X[:1]), rtol=RTOL)
    many = _predict(client, "price", "production", ROWS_10K)
    assert len(many["predictions"]) == 10_000
    np.testing.assert_allclose(many["predictions"], model.predict(ROWS_10K), rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_classifier_answers_labels_and_probabilities_like_the_library(client, fmt, kind):
    model = model_for(fmt, kind)
    record = _register(client, fmt, model, name="churn")
    classes = [0, 1] if kind == "binary" else [0, 1, 2]
    assert record["signature"]["classes"] == classes
    assert record["signature"]["methods"] == ["predict", "predict_proba"]
    assert client.post("/models/churn/versions/1/promote", json={}).status_code == 200
    labels = _predict(client, "churn", "production", ROWS_10K)["predictions"]
    assert labels == model.predict(ROWS_10K).tolist()
    proba = _predict(client, "churn", "production", ROWS_10K[:500], "predict_proba")
    np.testing.assert_allclose(
        proba["predictions"], model.predict_proba(ROWS_10K[:500]), rtol=RTOL, atol=1e-7
    )
    one = _predict(client, "churn", "1", ROWS_10K[:1], "predict_proba")["predictions"]
    np.testing.assert_allclose(one, model.predict_proba(ROWS_10K[:1]), rtol=RTOL, atol=1e-7)


def test_xgboost_ubjson_and_missing_values_answer_like_the_library(client):
    model = model_for("xgboost", "regressor")
    response = register(
        client, "ubj", file_bytes("xgboost", model, "ubj"), {"format": "xgboost"}, "model.ubj"
    )
    assert response.status_code == 201, response.get_json()
    rows = ROWS_10K[:50].copy()
    rows[::3, 1] = np.nan
    body = {"instances": [[None if np.isnan(v) else v for v in row] for row in rows]}
    answer = client.post("/models/ubj/1/predict", json=body)
    assert answer.status_code == 200, answer.get_json()
    np.testing.assert_allclose(answer.get_json()["predictions"], model.predict(rows), rtol=RTOL)


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_is_taken_from_the_file_extension(client, fmt):
    model = model_for(fmt, "regressor")
    response = client.post(  # no metadata at all: the extension says the format
        "/models/guess/versions",
        data={"artifact": (io.BytesIO(file_bytes(fmt, model)), FILENAMES[fmt])},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["format"] == fmt


def _bad_files(fmt: str) -> dict[str, bytes]:
    good = file_bytes(fmt, model_for(fmt, "regressor"))
    other = (
        b'{"model": "not a booster", "weights": [1, 2, 3]}'
        if fmt == "xgboost"
        else (b"feature,value\n1,2\n")
    )
    files = {
        "other content": other,
        "truncated": good[: len(good) // 2],
        "truncated at the end": good[:-40],
        "binary noise": bytes(range(256)) * 8,
    }
    if fmt == "xgboost":
        ubj = file_bytes(fmt, model_for(fmt, "regressor"), "ubj")
        files["truncated ubjson"] = ubj[: len(ubj) // 2]
    return files


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_that_is_not_a_whole_model_is_refused_and_nothing_is_stored(client, app, fmt):
    for label, data in _bad_files(fmt).items():
        response = register(client, "bad", data, {"format": fmt}, FILENAMES[fmt])
        body = problem(response)
        assert response.status_code == 422, (label, body)
        assert "artifact" in body["errors"], (label, body)
        assert fmt in body["errors"]["artifact"], (label, body)
    assert stored_blobs(app) == []
    assert client.get("/models/bad").status_code == 404


@pytest.mark.parametrize("fmt", FORMATS)
def test_more_features_than_the_signature_says_is_refused(client, app, fmt):
    data = file_bytes(fmt, model_for(fmt, "regressor"))
    response = register(
        client, "wide", data, {"format": fmt, "signature": {"n_features": 3}}, FILENAMES[fmt]
    )
    body = problem(response)
    assert response.status_code == 422
    assert "declared 3" in body["errors"]["signature.n_features"]
    assert stored_blobs(app) == []
    example = register(
        client, "wide", data, {"format": fmt, "input_example": [[1.0, 2.0]]}, FILENAMES[fmt]
    )
    assert example.status_code == 422
    assert "input_example" in str(problem(example)["errors"])
    assert stored_blobs(app) == []


@pytest.fixture
def without(monkeypatch):
    """Make `import <library>` fail in this process, as on a server without the extra."""

    def hide(library: str) -> None:
        for module in [m for m in sys.modules if m == library or m.startswith(library + ".")]:
            monkeypatch.delitem(sys.modules, module)
        monkeypatch.setitem(sys.modules, library, None)

    return hide


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_the_library_registration_is_422_naming_the_extra(client, app, fmt, without):
    data = file_bytes(fmt, model_for(fmt, "regressor"))
    without(fmt)
    response = register(client, "nolib", data, {"format": fmt}, FILENAMES[fmt])
    body = problem(response)
    assert response.status_code == 422
    assert f"modelreg[{fmt}]" in body["detail"]
    assert f"'{fmt}' extra" in body["errors"]["metadata.format"]
    assert stored_blobs(app) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_the_library_a_load_is_503_naming_the_extra(client, fmt, without):
    model = model_for(fmt, "regressor")
    _register(client, fmt, model, name="nolib")
    without(fmt)
    response = client.post("/models/nolib/1/predict", json={"instances": EXAMPLE})
    body = problem(response)
    assert response.status_code == 503
    assert f"pip install 'modelreg[{fmt}]'" in body["detail"]
    promote = client.post("/models/nolib/versions/1/promote", json={})
    assert promote.status_code in (422, 503)
    assert f"modelreg[{fmt}]" in problem(promote)["detail"]
    assert client.get("/models/nolib/aliases").get_json().get("aliases", {}) in ({}, [])


@pytest.fixture
def accelerating(tmp_path, database_url):
    from manage import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path, database_url, ACCELERATE="auto"))
    yield app.test_client()
    app.extensions["modelreg"].engine.dispose()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["regressor", "binary", "multiclass"])
def test_accelerated_answers_equal_the_library_within_the_recorded_tolerance(
    accelerating, fmt, kind
):
    model = model_for(fmt, kind, n_estimators=30)
    record = _register(accelerating, fmt, model, name="fast")
    acceleration = record["acceleration"]
    assert acceleration["status"] == "ready", acceleration
    assert acceleration["served"]["form"] == "onnx-tree-ensemble"
    assert acceleration["served"]["runtime"] == "onnxruntime"
    assert fmt in acceleration["served"]["note"].lower()
    rtol, atol = acceleration["tolerance"]["rtol"], acceleration["tolerance"]["atol"]
    rows = ROWS_10K.copy()
    rows[::7, 2] = np.nan
    body = {"instances": [[None if np.isnan(v) else v for v in row] for row in rows]}
    for method in record["signature"]["methods"]:
        for sample in (body["instances"][:1], body["instances"]):
            answer = accelerating.post(
                "/models/fast/1/predict", json={"instances": sample, "method": method}
            )
            assert answer.status_code == 200, answer.get_json()
            got = answer.get_json()["predictions"]
            expected = getattr(model, method)(rows[: len(sample)])
            if kind != "regressor" and method == "predict":
                assert got == expected.tolist()
            else:
                np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def test_large_xgboost_batches_go_to_xgboost_and_the_graph_serves_alone_without_it(
    accelerating, without
):
    from serving.boosters.routing import LIBRARY_FROM_ROWS

    model = model_for("xgboost", "binary", n_estimators=30)
    _register(accelerating, "xgboost", model, name="routed")
    edge = LIBRARY_FROM_ROWS["xgboost"]
    for rows in (ROWS_10K[: edge - 1], ROWS_10K[:edge]):  # graph, then XGBoost's predict
        got = _predict(accelerating, "routed", 1, rows, "predict_proba")["predictions"]
        np.testing.assert_allclose(got, model.predict_proba(rows), rtol=1e-4, atol=1e-4)
    expected = model.predict(ROWS_10K).tolist()
    without("xgboost")
    assert accelerating.delete("/serving/cache/routed/1").status_code == 200
    assert _predict(accelerating, "routed", 1, ROWS_10K)["predictions"] == expected
