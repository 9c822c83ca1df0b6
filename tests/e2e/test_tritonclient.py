"""The stock Triton HTTP client (`tritonclient[http]`) against a real `modelreg serve` process.

Models are registered over plain HTTP; everything else goes through tritonclient with its
defaults (binary tensors on) and with JSON tensors, and results are compared to the
estimators' own predictions.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import requests

from tests.conftest import fit_classifier, fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess

pytestmark = pytest.mark.slow

IN_CI = os.environ.get("CI", "").lower() == "true"

try:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException
except ImportError as missing:  # pragma: no cover - depends on the environment
    if IN_CI:  # CI installs the test extra: a missing client there is a failure, not a skip
        raise
    pytest.skip(
        f"tritonclient[http] is not installed ({missing}); "
        "install it with: pip install 'tritonclient[http]' (it is in the test extra)",
        allow_module_level=True,
    )

X3 = np.random.default_rng(11).random((5, 3))
X4 = np.random.default_rng(12).random((6, 4))


def linear_v1():
    return fit_linear(3, seed=0)


def linear_v2():
    return fit_linear(3, seed=1, offset=10.0)


def _register(url: str, name: str, model) -> dict:
    response = requests.post(
        f"{url}/models/{name}/versions",
        files={
            "artifact": ("m.joblib", joblib_bytes(model)),
            "metadata": (None, json.dumps({"format": "joblib"})),
        },
        timeout=60,
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("triton")
    env = {
        "AUTH_DISABLED": "true",
        "DATABASE_URL": f"sqlite:///{tmp / 'r.db'}",
        "STORAGE_URL": (tmp / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp / "instance"),
    }
    process = ServerProcess(env, tmp, workers=1, name="triton")
    try:
        assert requests.get(f"{process.url}/v2", timeout=10).status_code == 200
        _register(process.url, "price", linear_v1())
        _register(process.url, "price", linear_v2())
        promoted = requests.post(
            f"{process.url}/models/price/versions/1/promote", json={}, timeout=60
        )
        assert promoted.status_code == 200, promoted.text
        _register(process.url, "labels", fit_classifier(4, seed=0))
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(server):
    connection = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield connection
    connection.close()


def _input(X: np.ndarray, datatype: str, binary: bool = True):
    array = X.astype(np.float32 if datatype == "FP32" else np.float64)
    tensor = triton.InferInput("input", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor, array


def _texts(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel()]


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelreg"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(metadata["extensions"])


def test_model_metadata_and_readiness(client):
    metadata = client.get_model_metadata("price")
    assert metadata["name"] == "price"
    assert metadata["versions"] == ["1", "2"]
    assert metadata["platform"] == "sklearn_joblib"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 3]}]
    assert [o["name"] for o in client.get_model_metadata("labels")["outputs"]] == [
        "predict",
        "predict_proba",
    ]
    assert client.get_model_metadata("price", model_version="2")["parameters"]["version"] == "2"
    assert client.is_model_ready("price")
    assert client.is_model_ready("price", model_version="2")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready("price", model_version="9")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_infer_matches_the_estimator(client, datatype, binary):
    tensor, array = _input(X3, datatype, binary)
    outputs = [triton.InferRequestedOutput("predict", binary_data=binary)]
    result = client.infer("price", [tensor], outputs=outputs, request_id="r1")
    response = result.get_response()
    assert response["model_name"] == "price"
    assert response["model_version"] == "1"  # production
    assert response["id"] == "r1"
    predicted = result.as_numpy("predict")
    assert predicted.dtype == np.float64 and predicted.shape == (5,)
    expected = linear_v1().predict(array.astype(np.float64))
    assert np.allclose(predicted, expected, rtol=1e-6)


def test_infer_without_requested_outputs_uses_binary_output(client):
    tensor, array = _input(X3, "FP64")
    result = client.infer("price", [tensor])
    assert np.allclose(result.as_numpy("predict"), linear_v1().predict(array))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_predict_proba_and_string_labels(client, binary):
    model = fit_classifier(4, seed=0)
    tensor, array = _input(X4, "FP64", binary)
    outputs = [
        triton.InferRequestedOutput("predict", binary_data=binary),
        triton.InferRequestedOutput("predict_proba", binary_data=binary),
    ]
    result = client.infer("labels", [tensor], outputs=outputs)
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (6, 2)
    assert np.allclose(proba, model.predict_proba(array))
    assert _texts(result.as_numpy("predict")) == model.predict(array).tolist()


@pytest.mark.parametrize(
    ("version", "served", "model"),
    [("1", "1", linear_v1), ("2", "2", linear_v2), ("production", "1", linear_v1)],
)
def test_versions_by_number_and_alias(client, version, served, model):
    tensor, array = _input(X3, "FP64")
    result = client.infer(
        "price",
        [tensor],
        model_version=version,
        outputs=[triton.InferRequestedOutput("predict")],
    )
    assert result.get_response()["model_version"] == served
    assert np.allclose(result.as_numpy("predict"), model().predict(array))


def test_errors_carry_http_statuses(client):
    tensor, _ = _input(X3, "FP64")
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("no-such-model", [tensor])
    assert unknown.value.status() == "404"
    assert "not found" in unknown.value.message()

    with pytest.raises(InferenceServerException) as version:
        client.infer("price", [tensor], model_version="9")
    assert version.value.status() == "404"

    wrong, _ = _input(X4, "FP64")  # 4 features for a 3-feature model
    with pytest.raises(InferenceServerException) as shape:
        client.infer("price", [wrong])
    assert shape.value.status() == "400"
    assert "expected 3 features" in shape.value.message()

    with pytest.raises(InferenceServerException) as proba:
        client.infer("price", [tensor], outputs=[triton.InferRequestedOutput("predict_proba")])
    assert proba.value.status() == "400"

    with pytest.raises(InferenceServerException) as metadata:
        client.get_model_metadata("no-such-model")
    assert metadata.value.status() == "404"


def test_repository_and_statistics(client):
    client.unload_model("price")
    index = client.get_model_repository_index()
    assert ("price", "1") not in {(e["name"], e["version"]) for e in index}
    client.load_model("price")
    index = client.get_model_repository_index()
    assert {"name": "price", "version": "1", "state": "READY", "reason": ""} in index

    before = client.get_inference_statistics("price", model_version="2")["model_stats"][0]
    tensor, _ = _input(X3, "FP64")
    for _ in range(3):
        client.infer("price", [tensor], model_version="2")
    after = client.get_inference_statistics("price", model_version="2")["model_stats"][0]
    assert after["version"] == "2"
    success = after["inference_stats"]["success"]["count"]
    assert success == before["inference_stats"]["success"]["count"] + 3
    assert after["execution_count"] == before["execution_count"] + 3
    assert after["inference_count"] == before["inference_count"] + 3 * len(X3)
    everything = client.get_inference_statistics()["model_stats"]
    assert {"price"} <= {s["name"] for s in everything}
