"""MLflow's scoring protocol: payloads built with MLflow's own serializers, answers read the
way MLflow's client reads them, errors in MLflow's shape, on real fitted models."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from tests.api.test_v2 import colors
from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.helpers import register

mlflow_utils = pytest.importorskip("mlflow.models.utils")
from mlflow.deployments import PredictionsResponse  # noqa: E402

COLUMNS = ["a", "b", "c"]
FRAME = pd.DataFrame(np.random.default_rng(4).random((5, 3)).round(6), columns=COLUMNS)


@pytest.fixture
def app(tmp_path, database_url):
    from manage import create_app

    application = create_app(make_config(tmp_path, database_url, INVOCATIONS_MODEL="lin:1"))
    client = application.test_client()
    assert register(client, "lin", joblib_bytes(fit_linear(3))).status_code == 201
    example = {"input_example": [{"color": "red", "size": 1.0}]}
    assert register(client, "colors", joblib_bytes(colors()), example).status_code == 201
    yield application
    application.extensions["modelreg"].engine.dispose()


def predictions(response) -> np.ndarray:
    """As MLflow's deployment client parses a scoring answer."""
    assert response.status_code == 200, response.get_data(as_text=True)
    parsed = PredictionsResponse.from_json(response.get_data(as_text=True))
    return np.asarray(parsed.get_predictions(predictions_format="ndarray"))


def mlflow_error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert {"error_code", "message"} <= set(body) and body["message"], body
    return body


def serving_input(example) -> str:
    """MLflow's own payload for an input example (what `mlflow models` documents)."""
    return mlflow_utils.convert_input_example_to_serving_input(example)


@pytest.mark.parametrize("route", ["/models/lin/1/invocations", "/invocations"])
def test_mlflow_payload_shapes_answer_like_mlflow(app, route):
    client = app.test_client()
    expected = fit_linear(3).predict(FRAME.to_numpy())
    frame = FRAME.rename(columns=dict(zip(COLUMNS, ["0", "1", "2"], strict=True)))
    bodies = [
        serving_input(frame),  # dataframe_split
        serving_input(FRAME.to_numpy()),  # inputs (a tensor)
        json.dumps({"instances": FRAME.to_numpy().tolist()}),
        json.dumps({"inputs": FRAME.to_numpy().tolist(), "params": {"ignored": 1}}),
    ]
    for body in bodies:
        response = client.post(route, data=body, content_type="application/json")
        assert np.allclose(predictions(response), expected, rtol=1e-9), body[:80]
        assert response.headers["X-Model-Version"] == "1"


def test_csv_and_typed_columns(app):
    client = app.test_client()
    frame = pd.DataFrame({"color": ["green", "blue"], "size": [2.0, 3.5]})
    csv = frame.to_csv(index=False)
    response = client.post("/models/colors/latest/invocations", data=csv, content_type="text/csv")
    assert np.allclose(predictions(response), colors().predict(frame), rtol=1e-9)
    for body in (
        serving_input(frame),  # dataframe_split, named columns
        json.dumps({"dataframe_records": frame.to_dict(orient="records")}),
    ):
        response = client.post(
            "/models/colors/1/invocations", data=body, content_type="application/json"
        )
        assert np.allclose(predictions(response), colors().predict(frame), rtol=1e-9)


def test_errors_are_mlflows_shape_and_name_the_field(app):
    client = app.test_client()
    short = json.dumps({"instances": [[1.0, 2.0]]})
    body = mlflow_error(
        client.post("/invocations", data=short, content_type="application/json"), 400
    )
    assert body["error_code"] == "INVALID_PARAMETER_VALUE" and "instances" in json.dumps(body)
    bad_params = json.dumps({"instances": [[1.0, 2.0, 3.0]], "params": [1]})
    body = mlflow_error(
        client.post("/invocations", data=bad_params, content_type="application/json"), 400
    )
    assert body["errors"] == {"params": "expected an object"}
    body = mlflow_error(client.post("/invocations", data="a,b\n1,", content_type="text/plain"), 415)
    assert "text/csv" in body["message"]
    body = mlflow_error(client.post("/models/nope/1/invocations", json={"instances": [[1]]}), 404)
    assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    body = mlflow_error(
        client.post("/invocations", data=b"{", content_type="application/json"), 400
    )
    assert body["error_code"] == "BAD_REQUEST"


def test_invocations_without_a_default_model_is_a_clear_404(tmp_path):
    from manage import create_app

    application = create_app(make_config(tmp_path))
    body = mlflow_error(application.test_client().post("/invocations", json={"instances": []}), 404)
    assert "INVOCATIONS_MODEL" in body["message"]
    application.extensions["modelreg"].engine.dispose()


def test_ping_and_health_answer_without_a_token(tmp_path):
    from manage import create_app

    application = create_app(make_config(tmp_path, AUTH_DISABLED=False))
    client = application.test_client()
    for path in ("/ping", "/health"):
        assert client.get(path).status_code == 200
    body = mlflow_error(client.post("/invocations", json={"instances": [[1.0]]}), 401)
    assert body["error_code"] == "UNAUTHENTICATED"
    application.extensions["modelreg"].engine.dispose()


def test_a_gzipped_request_body_is_inflated(app):
    raw = json.dumps({"instances": FRAME.to_numpy().tolist()}).encode()
    response = app.test_client().post(
        "/invocations",
        data=gzip.compress(raw),
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )
    assert np.allclose(predictions(response), fit_linear(3).predict(FRAME.to_numpy()))
