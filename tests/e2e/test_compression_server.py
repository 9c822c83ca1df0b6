"""gzip through the real gunicorn worker of `modelreg serve --workers 2`: large answers are
compressed for clients that ask, on the worker's inline path and on gunicorn's thread pool
alike, and gzip request bodies are inflated (within the predict body limit)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, register_joblib, sqlite_env

pytestmark = pytest.mark.slow

N_FEATURES = 4
MODEL = fit_linear(N_FEATURES, seed=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("gzip")
    env = sqlite_env(
        tmp_path,
        MAX_PREDICT_BODY_BYTES=str(1024 * 1024),
    )
    process = ServerProcess(env, tmp_path, workers=2, threads=2, name="gzip")
    try:
        register_joblib(process.url, "lin", joblib_bytes(MODEL))
        yield process
    finally:
        process.stop()


def _rows(n: int) -> np.ndarray:
    return np.random.default_rng(n).random((n, N_FEATURES)).round(6)


def _raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[requests.Response, bytes]:
    """POST and return the answer's bytes as they came over the wire (not decoded)."""
    response = requests.post(url, data=body, headers=headers, timeout=30, stream=True)
    return response, response.raw.read(decode_content=False)


# 200 rows: a request small enough for the worker's inline path (< 16 KiB), an answer above
# COMPRESS_MIN_BYTES; 3000 rows: a request that goes to gunicorn's thread pool.
@pytest.mark.parametrize("n_rows", [200, 3000])
def test_a_large_predict_answer_is_gzipped_when_the_client_accepts_it(server, n_rows):
    X = _rows(n_rows)
    body = json.dumps({"instances": X.tolist()}).encode()
    url = f"{server.url}/models/lin/1/predict"
    headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip"}
    for _ in range(4):  # new connections: both workers, cold and warm model
        response, wire = _raw_post(url, body, headers)
        assert response.status_code == 200, wire[:500]
        assert response.headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in response.headers.get("Vary", "")
        assert int(response.headers["Content-Length"]) == len(wire)
        answer = json.loads(gzip.decompress(wire))
        assert answer["version"] == 1 and response.headers["X-Model-Version"] == "1"
        assert np.allclose(answer["predictions"], MODEL.predict(X), rtol=1e-9, atol=1e-9)
        assert len(wire) < len(json.dumps(answer))

    # requests asks for gzip by default: say identity to see the uncompressed answer
    plain, wire = _raw_post(url, body, {**headers, "Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    assert np.allclose(json.loads(wire)["predictions"], MODEL.predict(X), rtol=1e-9)


@pytest.mark.parametrize("n_rows", [5, 3000])
def test_a_gzip_request_body_is_accepted(server, n_rows):
    X = _rows(n_rows)
    body = gzip.compress(json.dumps({"instances": X.tolist()}).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    for _ in range(4):
        response = requests.post(
            f"{server.url}/models/lin/1/predict", data=body, headers=headers, timeout=30
        )
        assert response.status_code == 200, response.text
        assert np.allclose(response.json()["predictions"], MODEL.predict(X), rtol=1e-9)


def test_a_gzip_v2_inference_both_ways(server):
    X = _rows(500)
    tensor = {"name": "input", "shape": list(X.shape), "datatype": "FP64", "data": X.tolist()}
    body = gzip.compress(json.dumps({"inputs": [tensor]}).encode())
    headers = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Accept-Encoding": "gzip",
    }
    response, wire = _raw_post(f"{server.url}/v2/models/lin/infer", body, headers)
    assert response.status_code == 200, wire[:500]
    assert response.headers["Content-Encoding"] == "gzip"
    (output,) = json.loads(gzip.decompress(wire))["outputs"]
    assert np.allclose(output["data"], MODEL.predict(X), rtol=1e-9)


def test_a_gzip_body_that_inflates_beyond_the_limit_is_413(server):
    bomb = gzip.compress(b'{"instances": [' + b" " * (4 * 1024 * 1024) + b"]}")
    response = requests.post(
        f"{server.url}/models/lin/1/predict",
        data=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
