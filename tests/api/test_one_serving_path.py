"""Native predict (Flask and the fast path), V2 infer, MLflow's invocations and V1 predict
run through one data plane.

These tests change one shared piece at a time (the data plane's inference, the model
headers every protocol sends, the finisher every answer goes through, the one error mapping)
and check that every front-end's answer changes with it. A header or status added to one
front-end only would make the full header comparisons fail; a front-end that bypassed the
data plane, or ran a request twice, would fail the call counts.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pytest

from registry.answers import AnswerFinisher
from serving import dataplane, native
from serving.fastpath import PredictFastPath
from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.helpers import register

ROWS = np.random.default_rng(3).random((2, 3)).round(6)
NATIVE = {"instances": ROWS.tolist()}
V2 = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP64", "data": ROWS.tolist()}]}
ORIGIN = "https://dash.example"
TRANSPORT_HEADERS = {"Date", "Server"}  # the HTTP server's, not the app's
# Protocols that take the native body shapes: MLflow's scoring route and KServe V1.
OTHER_ROUTES = {"mlflow": "/models/m/1/invocations", "v1": "/v1/models/m/versions/1:predict"}
EVERY_FRONT_END = (
    ("native", "flask"),
    ("native", "fast"),
    ("v2", "flask"),
    ("mlflow", "flask"),
    ("v1", "flask"),
)


@cache
def artifact() -> bytes:
    return joblib_bytes(fit_linear(3, seed=0))


@pytest.fixture
def app(tmp_path, database_url):
    from manage import create_app

    application = create_app(
        make_config(
            tmp_path,
            database_url,
            ALIAS_REFRESH_SECONDS=60.0,
            AUTH_CACHE_SECONDS=60.0,
            CORS_ALLOWED_ORIGINS=ORIGIN,
            COMPRESS_MIN_BYTES=16,
        )
    )
    client = application.test_client()
    assert register(client, "m", artifact()).status_code == 201
    yield application
    application.extensions["modelreg"].engine.dispose()


def fastpath(app) -> PredictFastPath:
    layer = app.wsgi_app
    assert isinstance(layer, PredictFastPath)
    return layer


def send(app, kind: str, body: Any = None, request_id: str = "one-path"):
    """(which layer answered, the response) for one request of `kind`."""
    client = app.test_client()
    headers = {"X-Request-ID": request_id}
    before = fastpath(app).answered
    if kind == "v2":
        response = client.post("/v2/models/m/versions/1/infer", json=body or V2, headers=headers)
    elif kind in OTHER_ROUTES:
        response = client.post(OTHER_ROUTES[kind], json=body or NATIVE, headers=headers)
    else:
        response = client.post("/models/m/1/predict", json=body or NATIVE, headers=headers)
    layer = "fast" if fastpath(app).answered > before else "flask"
    return layer, response


def header_names(response) -> list[str]:
    return sorted(k for k, _ in response.headers.items() if k not in TRANSPORT_HEADERS)


def three_answers(app, native_body: Any = None, v2_body: Any = None):
    """Native through Flask (first request: it loads), native from the fast path, V2, then
    MLflow's invocations and V1."""
    answers = [
        send(app, kind, v2_body if kind == "v2" else native_body) for kind, _ in EVERY_FRONT_END
    ]
    assert [layer for layer, _ in answers] == [layer for _, layer in EVERY_FRONT_END]
    return [response for _, response in answers]


def count_calls(monkeypatch, owner: Any, name: str) -> list[int]:
    calls = [0]
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_every_front_end_calls_the_model_once_through_the_data_plane(app, monkeypatch):
    model_calls = count_calls(monkeypatch, dataplane, "call_model")
    for kind, layer in EVERY_FRONT_END:
        before = model_calls[0]
        answered, response = send(app, kind)
        assert (answered, response.status_code) == (layer, 200)
        assert model_calls[0] == before + 1, kind
    stats = app.test_client().get("/v2/models/m/versions/1/stats").get_json()
    assert stats["model_stats"][0]["execution_count"] == 5  # all five, one statistics


def test_a_failing_request_is_decoded_once_and_never_rerun(app, monkeypatch):
    send(app, "native")  # loaded and in memory
    decodes = count_calls(monkeypatch, native, "decode_predict_body")
    model_calls = count_calls(monkeypatch, dataplane, "call_model")
    layer, response = send(app, "native", {"instances": [[1.0, 2.0]]})  # one feature short
    assert (layer, response.status_code) == ("fast", 422)
    assert (decodes[0], model_calls[0]) == (1, 0)
    refusing = {"instances": ROWS.tolist(), "method": "predict"}
    monkeypatch.setattr(dataplane, "call_model", _refuse(model_calls))
    layer, response = send(app, "native", refusing)
    assert (layer, response.status_code) == ("fast", 422)
    assert (decodes[0], model_calls[0]) == (2, 1)  # refused once, not retried by Flask


def _refuse(calls: list[int]) -> Callable[..., Any]:
    from registry.errors import InvalidInput

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        raise InvalidInput("the model could not predict this input", {"instances": "refused"})

    return refuse


def test_a_model_header_added_once_reaches_every_protocol(app, monkeypatch):
    original = native.model_headers
    monkeypatch.setattr(
        native, "model_headers", lambda inference: [*original(inference), ("X-Probe", "m")]
    )
    for response in three_answers(app):
        assert response.status_code == 200
        assert response.headers.getlist("X-Probe") == ["m"]


def test_a_finishing_header_added_once_reaches_every_answer(app, monkeypatch):
    original = AnswerFinisher.trailer

    def trailer(self: AnswerFinisher, request_id: str, **kwargs: Any) -> list[tuple[str, str]]:
        return [*original(self, request_id, **kwargs), ("X-Probe", "finished")]

    monkeypatch.setattr(AnswerFinisher, "trailer", trailer)
    for response in three_answers(app):
        assert response.headers.getlist("X-Probe") == ["finished"]
    _, refused = send(app, "native", {"instances": [[1.0]]})
    assert refused.status_code == 422
    assert refused.headers.getlist("X-Probe") == ["finished"]
    assert app.test_client().get("/models").headers.getlist("X-Probe") == ["finished"]


def test_the_one_error_mapping_decides_every_front_end_status(app, monkeypatch):
    from registry import problems

    original = problems.problem_for

    def teapot(error: BaseException, request_id: str | None = None) -> problems.Problem:
        found = original(error, request_id)
        if found.status != 422:
            return found
        return problems.Problem(418, "Teapot", found.detail, found.errors, (("X-Probe", "e"),))

    modules = ("registry.problems", "serving.fastpath", "serving.v2")
    for module in (*modules, "serving.invocations", "serving.v1"):
        monkeypatch.setattr(f"{module}.problem_for", teapot)
    bad_native = {"instances": [[1.0]]}
    bad_v2 = {"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}]}
    send(app, "native")  # in memory: the bad requests below are answered where they arrive
    for (layer, response), expected in (
        (send(app, "native", bad_native), "fast"),
        (send(app, "v2", bad_v2), "flask"),
        (send(app, "mlflow", bad_native), "flask"),
        (send(app, "v1", bad_native), "flask"),
    ):
        assert (layer, response.status_code) == (expected, 418)
        assert response.headers.getlist("X-Probe") == ["e"]


@pytest.mark.parametrize(
    "body",
    [NATIVE, {"instances": [[1.0, 2.0]]}, {"instances": ROWS.tolist(), "method": "transform"}],
    ids=["success", "too few features", "unknown method"],
)
@pytest.mark.parametrize(
    "extra", [{}, {"Origin": ORIGIN, "Accept-Encoding": "gzip"}], ids=["plain", "cors+gzip"]
)
def test_flask_and_the_fast_path_send_the_same_header_set(
    app, body: dict[str, Any], extra: dict[str, str]
):
    """Every header name, not a list of compared ones: a header added to one path only
    fails here (CORS and gzip included)."""
    send(app, "native")  # loaded
    headers = {"X-Request-ID": "same", **extra}
    before = fastpath(app).answered
    fast = app.test_client().post("/models/m/1/predict", json=body, headers=headers)
    assert fastpath(app).answered == before + 1
    front = fastpath(app)
    app.wsgi_app = front.app  # Flask alone
    try:
        flask = app.test_client().post("/models/m/1/predict", json=body, headers=headers)
    finally:
        app.wsgi_app = front
    assert (fast.status_code, fast.data) == (flask.status_code, flask.data)
    assert header_names(fast) == header_names(flask)
    for name in header_names(fast):
        assert fast.headers.getlist(name) == flask.headers.getlist(name), name


def test_observers_see_every_front_ends_inference_and_cannot_fail_it(app):
    seen: list[tuple[str, int, int]] = []
    data_plane = app.extensions["modelreg"].dataplane

    def broken(inference: Any) -> None:
        raise RuntimeError("an observer bug")

    data_plane.observers.extend([broken, lambda i: seen.append((i.name, i.version, i.batch.rows))])
    try:
        for kind, layer in EVERY_FRONT_END:
            answered, response = send(app, kind)
            assert (answered, response.status_code) == (layer, 200)
        _, refused = send(app, "native", {"instances": [[1.0]]})
        assert refused.status_code == 422
    finally:
        data_plane.observers.clear()
    assert seen == [("m", 1, 2)] * 5  # successes only, each once, the failing one never
