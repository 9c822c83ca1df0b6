"""Micro-batching through the serving layer: merged only where it helps, split back exactly."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from tests.conftest import fit_linear, make_config, skops_bytes
from tests.helpers import register

RNG = np.random.default_rng(5)
X = RNG.random((400, 8))
Y = X @ np.arange(1, 9) + RNG.normal(0, 0.1, 400)


@pytest.fixture
def app(tmp_path):
    from manage import create_app

    application = create_app(make_config(tmp_path, ACCELERATE="off", BATCH_MAX_WAIT_MS=5.0))
    yield application
    application.extensions["modelreg"].engine.dispose()


def _metric(text: str, name: str, model: str) -> float:
    match = re.search(rf'^{name}{{model="{model}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_concurrent_requests_of_mixed_sizes_each_get_exactly_their_rows(app):
    client = app.test_client()
    forest = RandomForestRegressor(n_estimators=60, max_depth=8, random_state=0).fit(X, Y)
    assert (
        register(
            client, "forest", skops_bytes(forest), {"format": "skops"}, filename="f.skops"
        ).status_code
        == 201
    )
    sizes = RNG.integers(1, 40, 96)
    starts = RNG.integers(0, len(X) - 40, 96)

    def predict(i: int) -> tuple[int, list[float]]:
        rows = X[starts[i] : starts[i] + sizes[i]]
        response = client.post("/models/forest/1/predict", json={"instances": rows.tolist()})
        assert response.status_code == 200, response.get_json()
        return i, response.get_json()["predictions"]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(predict, range(len(sizes))))
    for i, predictions in answers:
        expected = forest.predict(X[starts[i] : starts[i] + sizes[i]])
        assert len(predictions) == sizes[i]
        assert np.allclose(predictions, expected), f"request {i} got someone else's rows"
    text = client.get("/metrics").get_data(as_text=True)
    batches = _metric(text, "modelreg_batch_requests_count", "forest")
    merged = _metric(text, "modelreg_batch_requests_sum", "forest")
    assert merged == len(sizes)
    assert 0 < batches < len(sizes), "no request was merged with another"
    assert _metric(text, "modelreg_batch_rows_sum", "forest") == sizes.sum()


def test_classifier_probabilities_split_back_per_request(app):
    client = app.test_client()
    labels = np.where(np.median(Y) < Y, "high", "low")
    forest = RandomForestClassifier(n_estimators=60, max_depth=8, random_state=0).fit(X, labels)
    register(client, "cls", skops_bytes(forest), {"format": "skops"}, filename="c.skops")

    def predict(i: int):
        rows = X[i : i + 1 + i % 5]
        body = {"instances": rows.tolist(), "method": "predict_proba" if i % 2 else "predict"}
        return i, rows, client.post("/models/cls/1/predict", json=body).get_json()

    with ThreadPoolExecutor(12) as pool:
        for i, rows, answer in pool.map(predict, range(60)):
            if i % 2:
                assert np.allclose(answer["predictions"], forest.predict_proba(rows))
                assert answer["classes"] == ["high", "low"]
            else:
                assert answer["predictions"] == forest.predict(rows).tolist()


def test_fast_models_are_never_batched(app):
    client = app.test_client()
    register(client, "linear", skops_bytes(fit_linear(8)), {"format": "skops"}, filename="l.skops")
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda i: (
                    client.post(
                        "/models/linear/1/predict", json={"instances": [X[i].tolist()]}
                    ).status_code
                ),
                range(80),
            )
        )
    assert statuses == [200] * 80
    text = client.get("/metrics").get_data(as_text=True)
    assert _metric(text, "modelreg_batch_requests_count", "linear") == 0


def test_batching_off_calls_the_model_directly(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path, ACCELERATE="off", BATCHING="off"))
    client = app.test_client()
    forest = RandomForestRegressor(n_estimators=30, random_state=0).fit(X, Y)
    register(client, "forest", skops_bytes(forest), {"format": "skops"}, filename="f.skops")
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: client.post(
                    "/models/forest/1/predict", json={"instances": [X[i].tolist()]}
                ),
                range(40),
            )
        )
    text = client.get("/metrics").get_data(as_text=True)
    assert _metric(text, "modelreg_batch_requests_count", "forest") == 0
