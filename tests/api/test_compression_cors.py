"""gzip answers (Flask and the fast path), compressed request bodies on the native predict
route (bounded by the body limit), and CORS for browser dashboards."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest

from serving.fastpath import PredictFastPath
from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.helpers import problem, register

ROWS = np.random.default_rng(2).random((200, 3))
ORIGIN = "https://dash.example"


@pytest.fixture
def app(tmp_path, database_url):
    from manage import create_app

    application = create_app(
        make_config(
            tmp_path,
            database_url,
            MAX_PREDICT_BODY_BYTES=64 * 1024,
            CORS_ALLOWED_ORIGINS=f"{ORIGIN}, https://other.example",
            ALIAS_REFRESH_SECONDS=60.0,
        )
    )
    assert register(application.test_client(), "m", joblib_bytes(fit_linear(3))).status_code == 201
    yield application
    application.extensions["modelreg"].engine.dispose()


def predict(app, body: bytes, **headers: str):
    layer = app.wsgi_app
    assert isinstance(layer, PredictFastPath)
    before = layer.answered
    response = app.test_client().post(
        "/models/m/1/predict", data=body, content_type="application/json", headers=headers
    )
    return ("fast" if layer.answered > before else "flask"), response


def test_large_answers_are_gzipped_on_both_paths_and_small_ones_are_not(app):
    body = json.dumps({"instances": ROWS.tolist()}).encode()
    expected = fit_linear(3).predict(ROWS)
    for layer in ("flask", "fast"):
        answered, response = predict(app, body, **{"Accept-Encoding": "gzip, br"})
        assert answered == layer and response.status_code == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(response.data))
        answer = json.loads(gzip.decompress(response.data))
        assert np.allclose(answer["predictions"], expected, rtol=1e-9)
    small = json.dumps({"instances": ROWS[:1].tolist()}).encode()
    _, response = predict(app, small, **{"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in response.headers  # below COMPRESS_MIN_BYTES
    _, response = predict(app, body, **{"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in response.headers
    listing = app.test_client().get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert listing.headers["Content-Encoding"] == "gzip"  # any Flask answer
    assert json.loads(gzip.decompress(listing.data))["openapi"]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compressed_request_bodies_are_inflated_on_both_paths(app, coding):
    raw = json.dumps({"instances": ROWS[:4].tolist()}).encode()
    packed = gzip.compress(raw) if coding == "gzip" else zlib.compress(raw)
    for layer in ("flask", "fast"):
        answered, response = predict(app, packed, **{"Content-Encoding": coding})
        assert (answered, response.status_code) == (layer, 200), response.data[:200]
        assert np.allclose(response.get_json()["predictions"], fit_linear(3).predict(ROWS[:4]))


def test_a_zip_bomb_is_refused_at_the_body_limit(app):
    bomb = gzip.compress(b" " * (10 * 1024 * 1024))  # ~10 KiB that inflates to 10 MiB
    assert len(bomb) < 64 * 1024
    for _ in range(2):  # Flask, then the fast path
        _, response = predict(app, bomb, **{"Content-Encoding": "gzip"})
        assert response.status_code == 413
        assert "decompressed" in problem(response)["detail"]
    _, response = predict(app, b"not gzip", **{"Content-Encoding": "gzip"})
    assert problem(response)["errors"].keys() == {"Content-Encoding"}
    _, response = predict(app, b"{}", **{"Content-Encoding": "br"})
    assert response.status_code == 400


def test_cors_preflight_and_answers_for_allowed_origins_only(tmp_path, database_url):
    from manage import create_app

    app = create_app(
        make_config(tmp_path, database_url, AUTH_DISABLED=False, CORS_ALLOWED_ORIGINS=ORIGIN)
    )
    client = app.test_client()
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    response = client.options("/models/m/1/predict", headers=preflight)  # no token: allowed
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    refused = client.options(
        "/models/m/1/predict", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in refused.headers
    answer = client.get("/models", headers={"Origin": ORIGIN})
    assert answer.status_code == 401  # still needs a token
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Model-Version" in answer.headers["Access-Control-Expose-Headers"]
    app.extensions["modelreg"].engine.dispose()


def test_cors_is_off_by_default(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path))
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    response = app.test_client().options("/models", headers=preflight)
    assert "Access-Control-Allow-Origin" not in response.headers
    app.extensions["modelreg"].engine.dispose()
