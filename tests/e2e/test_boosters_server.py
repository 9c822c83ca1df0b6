"""XGBoost and LightGBM against a real `modelreg serve` process: registered from fitted
models by the Python client (which picks their own formats) and by the CLI, promoted, and
answered through the stock Triton client like the libraries' own predict."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from click.testing import CliRunner

from manage import cli
from registry.client import Client
from tests.boosters import EXAMPLE, X, file_bytes, model_for
from tests.e2e.servers import ServerProcess

pytestmark = pytest.mark.slow

triton = pytest.importorskip("tritonclient.http")

RTOL = 1e-4  # what registration's verification allows (serving/accelerate.py)
ROWS = np.random.default_rng(5).normal(size=(10_000, X.shape[1]))
MODELS = {
    ("xgboost", "regressor"): "xgb-price",
    ("xgboost", "binary"): "xgb-churn",
    ("lightgbm", "regressor"): "lgb-price",
    ("lightgbm", "multiclass"): "lgb-segment",
}


@pytest.fixture(scope="module")
def fitted():
    return {key: model_for(*key) for key in MODELS}


@pytest.fixture(scope="module")
def server(tmp_path_factory, fitted):
    tmp = tmp_path_factory.mktemp("boosters")
    env = {
        "AUTH_DISABLED": "true",
        "DATABASE_URL": f"sqlite:///{tmp / 'r.db'}",
        "STORAGE_URL": (tmp / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp / "instance"),
        "ACCELERATE": "auto",
    }
    process = ServerProcess(env, tmp, workers=1, name="boosters")
    try:
        client = Client(process.url)
        for key, name in MODELS.items():
            record = client.register(name, fitted[key], input_example=EXAMPLE)
            assert record["format"] == key[0]
            client.promote(name, record["version"], reason="first")
        yield process
    finally:
        process.stop()


@pytest.fixture
def triton_client(server):
    connection = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield connection
    connection.close()


def _infer(connection, name, rows, outputs):
    tensor = triton.InferInput("input", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows.astype(np.float64))
    requested = [triton.InferRequestedOutput(o) for o in outputs]
    return connection.infer(name, [tensor], outputs=requested)


@pytest.mark.parametrize("key", list(MODELS), ids=lambda k: "-".join(k))
def test_v2_infer_answers_like_the_library(triton_client, fitted, key):
    model, name = fitted[key], MODELS[key]
    classifier = key[1] != "regressor"
    outputs = ["predict", "predict_proba"] if classifier else ["predict"]
    for rows in (ROWS[:1], ROWS):
        result = _infer(triton_client, name, rows, outputs)
        assert result.get_response()["model_version"] == "1"
        predicted = result.as_numpy("predict")
        if classifier:
            assert predicted.tolist() == model.predict(rows).tolist()
            np.testing.assert_allclose(
                result.as_numpy("predict_proba"), model.predict_proba(rows), rtol=RTOL, atol=1e-6
            )
        else:
            np.testing.assert_allclose(predicted, model.predict(rows), rtol=RTOL, atol=1e-5)
    metadata = triton_client.get_model_metadata(name)
    assert metadata["platform"].startswith(key[0])


def test_native_predict_and_what_is_served(server, fitted):
    client = Client(server.url)
    for key, name in MODELS.items():
        record = client.get_version(name, "production")
        acceleration = record["acceleration"]
        assert acceleration["status"] == "ready", acceleration
        assert acceleration["served"]["form"] == "onnx-tree-ensemble"
        assert acceleration["served"]["runtime"] == "onnxruntime"
        answer = requests.post(
            f"{server.url}/models/{name}/production/predict",
            json={"instances": ROWS[:100].tolist()},
            timeout=30,
        ).json()
        if key[1] == "regressor":
            np.testing.assert_allclose(
                answer["predictions"], fitted[key].predict(ROWS[:100]), rtol=RTOL, atol=1e-5
            )
        else:
            assert answer["predictions"] == fitted[key].predict(ROWS[:100]).tolist()


def test_cli_registers_model_files_by_their_extension(server, tmp_path, fitted):
    runner = CliRunner()
    for fmt, filename in (("xgboost", "m.ubj"), ("lightgbm", "m.txt")):
        path = tmp_path / filename
        model = fitted[(fmt, "regressor")]
        path.write_bytes(
            file_bytes(fmt, model, "ubj") if fmt == "xgboost" else file_bytes(fmt, model)
        )
        result = runner.invoke(
            cli, ["register", f"cli-{fmt}", str(path), "--url", server.url],
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "version 1" in result.output
        record = Client(server.url).get_version(f"cli-{fmt}", 1)
        assert record["format"] == fmt
