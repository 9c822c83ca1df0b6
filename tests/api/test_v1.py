"""KServe V1 / TF Serving REST routes against their documented wire format (the KServe SDK
is not installed: it pulls in a server stack). Real fitted models."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.helpers import register

X = np.random.default_rng(9).random((3, 3))


@pytest.fixture
def client(tmp_path, database_url):
    from manage import create_app

    app = create_app(make_config(tmp_path, database_url))
    client = app.test_client()
    assert register(client, "lin", joblib_bytes(fit_linear(3))).status_code == 201
    assert register(client, "lin", joblib_bytes(fit_linear(3, offset=5.0))).status_code == 201
    assert client.post("/models/lin/versions/1/promote", json={}).status_code == 200
    yield client
    app.extensions["modelreg"].engine.dispose()


def v1_error(response, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


def test_predict_instances_default_alias_and_pinned_version(client):
    response = client.post("/v1/models/lin:predict", json={"instances": X.tolist()})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Model-Version"] == "1"  # production
    assert np.allclose(response.get_json()["predictions"], fit_linear(3).predict(X))
    response = client.post("/v1/models/lin/versions/2:predict", json={"instances": X.tolist()})
    assert np.allclose(response.get_json()["predictions"], fit_linear(3, offset=5.0).predict(X))


def test_tf_serving_columnar_inputs_answer_outputs(client):
    response = client.post(
        "/v1/models/lin:predict", json={"signature_name": "serving_default", "inputs": X.tolist()}
    )
    assert np.allclose(response.get_json()["outputs"], fit_linear(3).predict(X))


def test_model_status(client):
    body = client.get("/v1/models/lin").get_json()
    assert body["name"] == "lin" and body["ready"] is True
    assert body["model_version_status"][0]["version"] == "1"
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    assert (
        client.get("/v1/models/lin/versions/2").get_json()["model_version_status"][0]["version"]
        == "2"
    )


def test_errors_are_v1_shaped(client):
    assert "instances" in v1_error(
        client.post("/v1/models/lin:predict", json={"instances": [[1.0]]}), 400
    )
    assert "unknown key" in v1_error(client.post("/v1/models/lin:predict", json={"rows": []}), 400)
    v1_error(client.post("/v1/models/nope:predict", json={"instances": X.tolist()}), 404)
    v1_error(client.get("/v1/models/lin/versions/9"), 404)
    v1_error(client.post("/v1/models/lin:predict", data="x", content_type="text/plain"), 415)
