"""tritonclient (the stock Triton HTTP client) against the app on a real HTTP server:
per-column metadata for string and mixed columns, V2-shaped errors on unknown routes, and
readiness after unload."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.api.test_v2 import colors
from tests.conftest import LiveServer, fit_linear, joblib_bytes, make_config
from tests.helpers import register

triton = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def server(tmp_path, database_url):
    from manage import create_app

    app = create_app(make_config(tmp_path, database_url))
    client = app.test_client()
    example = {"input_example": [{"color": "red", "size": 1.0}]}
    assert register(client, "colors", joblib_bytes(colors()), example).status_code == 201
    assert register(client, "lin", joblib_bytes(fit_linear(3))).status_code == 201
    live = LiveServer(app)
    yield triton.InferenceServerClient(url=live.url.removeprefix("http://"))
    live.stop()
    app.extensions["modelreg"].engine.dispose()


def test_mixed_columns_are_advertised_per_column_and_accepted_as_advertised(server):
    metadata = server.get_model_metadata("colors")
    assert metadata["inputs"] == [
        {"name": "color", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "size", "datatype": "FP64", "shape": [-1, 1]},
    ]
    frame = pd.DataFrame({"color": ["green", "blue", "red"], "size": [2.5, 0.5, 4.0]})
    inputs = []
    for spec in metadata["inputs"]:  # built only from what the metadata says
        column = frame[spec["name"]].to_numpy()
        values = column.astype(object if spec["datatype"] == "BYTES" else np.float64)
        tensor = triton.InferInput(spec["name"], [len(frame), 1], spec["datatype"])
        tensor.set_data_from_numpy(values.reshape(-1, 1))
        inputs.append(tensor)
    result = server.infer("colors", inputs)
    assert np.allclose(result.as_numpy("predict"), colors().predict(frame), rtol=1e-9)


def test_a_numeric_model_still_advertises_one_matrix_input(server):
    (spec,) = server.get_model_metadata("lin")["inputs"]
    assert spec == {"name": "input", "datatype": "FP64", "shape": [-1, 3]}


def test_get_model_config_fails_with_a_message_the_client_decodes(server):
    with pytest.raises(InferenceServerException) as raised:
        server.get_model_config("lin")
    assert "no V2 endpoint" in raised.value.message()
    assert raised.value.status() == "404"


def test_unload_makes_the_model_not_ready_until_it_is_loaded_again(server):
    server.load_model("lin")
    assert server.is_model_ready("lin")
    server.unload_model("lin")
    assert not server.is_model_ready("lin")
    server.load_model("lin")
    assert server.is_model_ready("lin")
    x = np.random.default_rng(1).random((2, 3))
    tensor = triton.InferInput("input", [2, 3], "FP64")
    tensor.set_data_from_numpy(x)
    assert np.allclose(server.infer("lin", [tensor]).as_numpy("predict"), fit_linear(3).predict(x))
