"""The predict fast path (serving/fastpath.py) through the real app.

`PredictFastPath` sits in front of Flask as `app.wsgi_app` and answers a predict only when
the token, the reference and the model are all in memory. Its `answered` counter tells which
layer answered each request. Whichever layer answers, the client must get the same answer:
status, body, headers, and the same metrics and access-log line.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import cache
from typing import Any

import numpy as np
import pytest
import requests
from werkzeug.test import EnvironBuilder, run_wsgi_app

from registry import auth
from serving.fastpath import ROUTE, PredictFastPath
from tests.conftest import LiveServer, fit_classifier, fit_linear, joblib_bytes, make_config
from tests.helpers import problem, register

ROWS = np.random.default_rng(7).random((3, 3)).round(6)
BODY = {"instances": ROWS.tolist()}
# The headers both layers must send identically (Content-Length follows from the body).
COMPARED = (
    "Content-Type",
    "Content-Length",
    "X-Model-Version",
    "X-Model-Runtime",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Cache-Control",
    "X-Modelreg-Warning",
    "X-Model-Stale",
    "X-Request-ID",
)
HEX32 = re.compile(r"[0-9a-f]{32}")


# ---- models and apps -----------------------------------------------------------------------------


@cache
def linear(offset: float = 0.0):
    return fit_linear(3, seed=0, offset=offset)


@cache
def linear_artifact(offset: float = 0.0) -> bytes:
    return joblib_bytes(linear(offset))


@cache
def classifier_artifact() -> bytes:
    return joblib_bytes(fit_classifier(3, seed=1))


def _create(tmp_path, database_url: str, **overrides: Any):
    from manage import create_app

    # Long refresh and token-cache times: whether the fast path may answer must not depend on
    # how fast the machine runs the test (the short-lived cases set their own).
    settings = {"ALIAS_REFRESH_SECONDS": 60.0, "AUTH_CACHE_SECONDS": 60.0, **overrides}
    return create_app(make_config(tmp_path, database_url, **settings))


@pytest.fixture
def make_app(tmp_path, database_url: str) -> Iterator[Callable[..., Any]]:
    made = []

    def make(**overrides: Any):
        made.append(_create(tmp_path / f"app{len(made)}", database_url, **overrides))
        return made[-1]

    yield make
    for application in made:
        application.extensions["modelreg"].engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def fastpath(app) -> PredictFastPath:
    layer = app.wsgi_app
    assert isinstance(layer, PredictFastPath)
    return layer


def reg(client, name: str, artifact: bytes, headers: dict[str, str] | None = None) -> None:
    response = register(client, name, artifact, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)


def predict(client, name: str, ref: str | int, body: Any = BODY, **kwargs: Any):
    return client.post(f"/models/{name}/{ref}/predict", json=body, **kwargs)


def answered_by(app, send: Callable[[], Any]) -> tuple[str, Any]:
    """("fast" or "flask", the response) for one request."""
    layer = fastpath(app)
    before = layer.answered
    response = send()
    delta = layer.answered - before
    assert delta in (0, 1)
    return ("fast" if delta else "flask"), response


def fast_predict(app, client, *args: Any, **kwargs: Any):
    # The fast path answers only from memory and hands a request to Flask when a bounded
    # freshness check is due (a half-second token epoch, a one-second alias); on a loaded
    # machine one such hand-over can fall between two calls, and Flask's answer renews it.
    for _ in range(3):
        layer, response = answered_by(app, lambda: predict(client, *args, **kwargs))
        if layer == "fast":
            return response
    assert layer == "fast", response.get_data(as_text=True)
    return response


def flask_predict(app, client, *args: Any, **kwargs: Any):
    layer, response = answered_by(app, lambda: predict(client, *args, **kwargs))
    assert layer == "flask", response.get_data(as_text=True)
    return response


def answer(response) -> tuple[int, bytes, dict[str, str | None]]:
    """What a client sees: status, body and every compared header (each sent once)."""
    for name in COMPARED:
        assert len(response.headers.getlist(name)) <= 1, name
    return response.status_code, response.data, {h: response.headers.get(h) for h in COMPARED}


def promote(client, name: str, version: int, **kwargs: Any) -> None:
    response = client.post(
        f"/models/{name}/versions/{version}/promote",
        json={"alias": "production", "reason": "test"},
        **kwargs,
    )
    assert response.status_code == 200, response.get_data(as_text=True)


# ---- the fast path answers what Flask would ------------------------------------------------------


def test_the_second_predict_is_answered_by_the_fast_path_identically(app, client):
    reg(client, "m", linear_artifact())
    headers = {"X-Request-ID": "client-chosen-id-1"}
    first = flask_predict(app, client, "m", 1, headers=headers)
    assert fastpath(app).answered == 0
    second = fast_predict(app, client, "m", 1, headers=headers)
    assert fastpath(app).answered == 1

    assert answer(first) == answer(second)
    status, _, sent = answer(second)
    assert status == 200
    assert sent == {
        "Content-Type": "application/json",
        "Content-Length": str(len(second.data)),
        "X-Model-Version": "1",
        "X-Model-Runtime": "sklearn",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Modelreg-Warning": "authentication is disabled",
        "X-Model-Stale": None,
        "X-Request-ID": "client-chosen-id-1",
    }
    body = second.get_json()
    assert (body["model"], body["version"]) == ("m", 1)
    assert np.allclose(body["predictions"], linear().predict(ROWS))
    assert sorted(second.headers.keys()) == sorted(first.headers.keys())

    for _ in range(3):
        assert answer(fast_predict(app, client, "m", 1, headers=headers)) == answer(first)
    assert fastpath(app).answered == 4


@pytest.mark.parametrize(
    "sent",
    [None, "", "x" * 65, "tab\there", "caf\xe9"],
    ids=["absent", "empty", "too long", "not printable", "not ascii"],
)
def test_a_request_id_is_generated_when_the_client_sends_none_or_an_insane_one(app, client, sent):
    reg(client, "m", linear_artifact())
    headers = {} if sent is None else {"X-Request-ID": sent}
    ids = []
    for send in (flask_predict, fast_predict, fast_predict):
        response = send(app, client, "m", 1, headers=headers)
        assert response.status_code == 200
        ids.append(response.headers["X-Request-ID"])
    assert all(HEX32.fullmatch(value) for value in ids), ids
    assert len(set(ids)) == 3


def test_a_request_id_of_64_printable_characters_is_echoed(app, client):
    reg(client, "m", linear_artifact())
    sane = "r" * 32 + " !~-_.:/" + "9" * 24
    assert len(sane) == 64
    for send in (flask_predict, fast_predict):
        assert (
            send(app, client, "m", 1, headers={"X-Request-ID": sane}).headers["X-Request-ID"]
            == sane
        )


def test_probabilities_and_classes_are_the_same_from_both_layers(app, client):
    reg(client, "c", classifier_artifact())
    body = {"instances": ROWS.tolist(), "method": "predict_proba"}
    headers = {"X-Request-ID": "proba"}
    first = flask_predict(app, client, "c", 1, body, headers=headers)
    second = fast_predict(app, client, "c", 1, body, headers=headers)
    assert answer(first) == answer(second)
    assert second.get_json()["classes"] == ["high", "low"]
    assert np.allclose(np.sum(second.get_json()["predictions"], axis=1), 1.0)


def test_json_with_parameters_or_upper_case_or_no_content_type_is_served(app, client):
    reg(client, "m", linear_artifact())
    data = b'{"instances": [[1, 2, 3]]}'
    flask_predict(app, client, "m", 1)
    for content_type in ("application/json; charset=utf-8", "Application/JSON", None):
        layer, response = answered_by(
            app,
            lambda content_type=content_type: client.post(
                "/models/m/1/predict", data=data, content_type=content_type
            ),
        )
        assert (layer, response.status_code) == ("fast", 200), content_type
        assert np.allclose(response.get_json()["predictions"], linear().predict([[1, 2, 3]]))


# ---- references ----------------------------------------------------------------------------------


def test_an_alias_and_latest_are_served_once_known_and_follow_a_promotion(app, client):
    reg(client, "m", linear_artifact(0.0))
    reg(client, "m", linear_artifact(100.0))
    promote(client, "m", 1)

    first = flask_predict(app, client, "m", "production", headers={"X-Request-ID": "p"})
    again = fast_predict(app, client, "m", "production", headers={"X-Request-ID": "p"})
    assert answer(first) == answer(again)
    assert again.get_json()["version"] == 1
    assert np.allclose(again.get_json()["predictions"], linear(0.0).predict(ROWS))

    assert flask_predict(app, client, "m", "latest").get_json()["version"] == 2
    latest = fast_predict(app, client, "m", "latest")
    assert latest.get_json()["version"] == 2
    assert latest.headers["X-Model-Version"] == "2"
    assert np.allclose(latest.get_json()["predictions"], linear(100.0).predict(ROWS))

    # The refresh time is 60 s here: only forgetting the alias at once explains the move.
    promote(client, "m", 2)
    moved = flask_predict(app, client, "m", "production")
    assert moved.get_json()["version"] == 2
    assert moved.headers["X-Model-Version"] == "2"
    moved_again = fast_predict(app, client, "m", "production")
    assert moved_again.get_json() == moved.get_json()
    assert np.allclose(moved_again.get_json()["predictions"], linear(100.0).predict(ROWS))
    # (moving an alias also forgets `latest`, so this may be looked up once again)
    assert predict(client, "m", "latest").get_json()["version"] == 2
    assert fast_predict(app, client, "m", "latest").get_json()["version"] == 2


def test_a_new_registration_moves_latest_at_once(app, client):
    reg(client, "m", linear_artifact(0.0))
    flask_predict(app, client, "m", "latest")
    assert fast_predict(app, client, "m", "latest").get_json()["version"] == 1
    reg(client, "m", linear_artifact(100.0))
    assert flask_predict(app, client, "m", "latest").get_json()["version"] == 2
    assert fast_predict(app, client, "m", "latest").get_json()["version"] == 2


def test_an_evicted_or_deleted_model_is_not_served_from_memory(app, client):
    reg(client, "m", linear_artifact())
    flask_predict(app, client, "m", 1)
    fast_predict(app, client, "m", 1)

    assert client.delete("/serving/cache/m/1").get_json() == {"evicted": 1}
    assert flask_predict(app, client, "m", 1).status_code == 200  # loads it again
    fast_predict(app, client, "m", 1)

    assert client.delete("/models/m").status_code == 204
    gone = flask_predict(app, client, "m", 1)
    assert gone.status_code == 404
    problem(gone)


def flask_alone(app, path: str, **kwargs: Any):
    """The answer Flask gives to a request with the fast path out of the way."""
    layer = fastpath(app)
    app.wsgi_app = layer.app
    try:
        return app.test_client().post(path, **kwargs)
    finally:
        app.wsgi_app = layer


def test_a_reference_not_in_memory_is_left_to_flask(app, client):
    reg(client, "m", linear_artifact())
    flask_predict(app, client, "m", 1)
    for ref in ("2", "staging"):  # may exist: only the registry knows
        response = flask_predict(app, client, "m", ref)
        assert response.status_code == 404, ref
        problem(response)
    assert fastpath(app).answered == 0


def test_a_reference_that_cannot_exist_is_answered_from_memory_like_flask(app, client):
    reg(client, "m", linear_artifact())
    flask_predict(app, client, "m", 1)
    for ref in ("0", "Production"):
        headers = {"X-Request-ID": f"ref-{ref}"}
        layer, response = answered_by(
            app, lambda ref=ref, headers=headers: predict(client, "m", ref, headers=headers)
        )
        assert (layer, response.status_code) == ("fast", 404), ref
        alone = flask_alone(app, f"/models/m/{ref}/predict", json=BODY, headers=headers)
        assert answer(response) == answer(alone)
        assert sorted(response.headers.keys()) == sorted(alone.headers.keys())


# ---- what the fast path answers itself, and what it leaves to Flask ------------------------


BAD_BODIES = {
    "wrong number of features": ({"json": {"instances": [[1.0, 2.0]]}}, 422),
    "a string feature": ({"json": {"instances": [[1, "x", 3]]}}, 422),
    "unknown method": ({"json": {"instances": [[1, 2, 3]], "method": "transform"}}, 422),
    "no instances": ({"json": {}}, 422),
    "invalid JSON": ({"data": b'{"instances": [[1, 2', "content_type": "application/json"}, 400),
    "NaN literal": (
        {"data": b'{"instances": [[1, NaN, 3]]}', "content_type": "application/json"},
        400,
    ),
    "empty body": ({"data": b"", "content_type": "application/json"}, 400),
    "not UTF-8": ({"data": b'{"instances": [["\xff"]]}', "content_type": "application/json"}, 400),
}


@pytest.mark.parametrize("case", BAD_BODIES, ids=list(BAD_BODIES))
def test_a_bad_body_on_a_cached_model_gets_the_same_problem_as_from_flask(app, client, case):
    kwargs, status = BAD_BODIES[case]
    headers = {"X-Request-ID": "bad-body"}
    reg(client, "m", linear_artifact())

    def bad():
        return client.post("/models/m/1/predict", headers=headers, **kwargs)

    layer, before_cached = answered_by(app, bad)  # the model is not in memory yet
    assert layer == "flask"
    assert before_cached.status_code == status, before_cached.get_data(as_text=True)
    assert predict(client, "m", 1).status_code == 200  # (the bad request loaded it already)
    fast_predict(app, client, "m", 1)  # now it is in memory for sure

    # Answered where it arrived, once: the fast path does not hand a failure to Flask.
    layer, cached = answered_by(app, bad)
    assert layer == ("flask" if case == "empty body" else "fast")  # no Content-Length
    assert answer(cached) == answer(before_cached)
    assert sorted(cached.headers.keys()) == sorted(before_cached.headers.keys())
    assert cached.headers["Content-Type"] == "application/problem+json"
    assert problem(cached)["request_id"] == "bad-body"


@pytest.mark.parametrize("content_type", ["text/csv", "application/x-www-form-urlencoded"])
def test_a_wrong_content_type_is_415_from_flask(app, client, content_type):
    reg(client, "m", linear_artifact())
    flask_predict(app, client, "m", 1)
    fast_predict(app, client, "m", 1)
    layer, response = answered_by(
        app,
        lambda: client.post(
            "/models/m/1/predict", data=b'{"instances": [[1, 2, 3]]}', content_type=content_type
        ),
    )
    assert (layer, response.status_code) == ("flask", 415)
    assert problem(response)["errors"] == {"Content-Type": "expected application/json"}


def test_a_query_string_goes_through_flask(app, client):
    reg(client, "m", linear_artifact())
    reference = flask_predict(app, client, "m", 1, headers={"X-Request-ID": "q"})
    fast_predict(app, client, "m", 1)
    layer, response = answered_by(
        app,
        lambda: client.post("/models/m/1/predict?x=1", json=BODY, headers={"X-Request-ID": "q"}),
    )
    assert layer == "flask"
    assert answer(response) == answer(reference)


def test_a_chunked_body_goes_through_flask(app, client):
    reg(client, "m", linear_artifact())
    reference = flask_predict(app, client, "m", 1, headers={"X-Request-ID": "c"})
    fast_predict(app, client, "m", 1)
    layer, response = answered_by(
        app,
        lambda: client.post(
            "/models/m/1/predict",
            input_stream=io.BytesIO(b'{"instances": ' + repr(ROWS.tolist()).encode() + b"}"),
            content_type="application/json",
            headers={"Transfer-Encoding": "chunked", "X-Request-ID": "c"},
            # as a server that decoded the chunks says it
            environ_overrides={"wsgi.input_terminated": True},
        ),
    )
    assert layer == "flask"
    assert answer(response)[:2] == answer(reference)[:2]


def test_other_methods_and_paths_go_through_flask(app, client):
    reg(client, "m", linear_artifact())
    flask_predict(app, client, "m", 1)
    fast_predict(app, client, "m", 1)
    answered = fastpath(app).answered
    assert client.get("/models/m/1/predict").status_code == 405
    assert client.put("/models/m/1/predict", json=BODY).status_code == 405
    assert client.post("/models/m/1/predict/", json=BODY).status_code in (308, 404)
    assert client.post("/models//m/1/predict", json=BODY).status_code in (308, 404)
    assert client.post("/v2/models/m/versions/1/infer", json={}).status_code != 200
    assert fastpath(app).answered == answered


def test_a_body_over_the_limit_is_413_from_flask(make_app):
    app = make_app(MAX_PREDICT_BODY_BYTES=300)
    client = app.test_client()
    reg(client, "m", linear_artifact())
    small = {"instances": [[1, 2, 3]]}
    flask_predict(app, client, "m", 1, small)
    fast_predict(app, client, "m", 1, small)
    response = flask_predict(app, client, "m", 1, {"instances": [[1.123456, 2.1, 3.1]] * 30})
    assert response.status_code == 413
    body = problem(response)
    # The limit and the setting that raises it, not just "too large".
    assert "300 bytes" in body["detail"] and "MAX_PREDICT_BODY_BYTES" in body["detail"]
    assert "MAX_PREDICT_BODY_BYTES" in body["errors"]["body"]


# ---- authentication ------------------------------------------------------------------------------


class AuthWorld:
    def __init__(self, app) -> None:
        self.app = app
        self.client = app.test_client()
        self.uow = app.extensions["modelreg"].uow
        self.secrets: dict[str, str] = {}
        for role in ("admin", "publisher", "reader"):
            self.token(role, role)
        self.token("scoped", "reader", models=["a"])

    def token(self, name: str, role: str, **kwargs: Any) -> str:
        self.secrets[name], _ = auth.create_token(
            self.uow, name=name, role=role, actor="test", **kwargs
        )
        return self.secrets[name]

    def headers(self, name: str, request_id: str = "auth-test") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[name]}", "X-Request-ID": request_id}

    def models(self, *names: str) -> None:
        for name in names:
            reg(self.client, name, linear_artifact(), headers=self.headers("admin"))
            # the model and reference in memory, for a token the fast path knows
            flask_predict(self.app, self.client, name, 1, headers=self.headers("admin"))
            fast_predict(self.app, self.client, name, 1, headers=self.headers("admin"))

    def predict(self, model: str, caller: str | None) -> tuple[str, Any]:
        headers = self.headers(caller) if caller else {"X-Request-ID": "auth-test"}
        return answered_by(self.app, lambda: predict(self.client, model, 1, headers=headers))


@pytest.fixture
def world(make_app) -> AuthWorld:
    return AuthWorld(make_app(AUTH_DISABLED=False))


def test_a_reader_token_is_served_by_the_fast_path_after_its_first_request(world):
    world.models("a")
    layer, first = world.predict("a", "reader")
    assert (layer, first.status_code) == ("flask", 200)  # the token was checked in the database
    layer, second = world.predict("a", "reader")
    assert layer == "fast"
    assert answer(first) == answer(second)
    assert "X-Modelreg-Warning" not in second.headers
    assert second.headers["X-Request-ID"] == "auth-test"
    for caller in ("publisher", "scoped"):
        assert world.predict("a", caller)[0] == "flask"
        layer, response = world.predict("a", caller)
        assert layer == "fast"
        assert answer(response) == answer(first)


def test_a_token_checked_on_another_endpoint_is_then_served_by_the_fast_path(world):
    world.models("a")
    assert world.client.get("/models", headers=world.headers("reader")).status_code == 200
    assert world.predict("a", "reader")[0] == "fast"


def test_a_model_scoped_token_on_another_model_is_403_and_never_served(world):
    world.models("a", "b")
    world.predict("a", "scoped")
    assert world.predict("a", "scoped")[0] == "fast"  # the identity is now in memory
    for _ in range(3):
        layer, response = world.predict("b", "scoped")
        assert (layer, response.status_code) == ("flask", 403)
        assert "outside this token's models" in str(problem(response)["errors"])


def test_a_revoked_token_is_refused_at_once(world):
    world.models("a")
    world.token("leaving", "reader")
    world.predict("a", "leaving")
    assert world.predict("a", "leaving")[0] == "fast"
    revoked = world.client.delete("/tokens/leaving", headers=world.headers("admin"))
    assert revoked.status_code == 200, revoked.get_data(as_text=True)
    assert revoked.get_json()["revoked_at"] is not None
    for _ in range(2):
        layer, response = world.predict("a", "leaving")
        assert (layer, response.status_code) == ("flask", 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        problem(response)
    # Revocation empties the whole token cache: the others are checked again, once.
    assert world.predict("a", "reader")[0] == "flask"
    assert world.predict("a", "reader")[0] == "fast"


def test_a_token_revoked_by_another_process_leaves_the_fast_path_within_the_refresh(make_app):
    refresh = 0.5
    world = AuthWorld(make_app(AUTH_DISABLED=False, ALIAS_REFRESH_SECONDS=refresh))
    elsewhere = make_app(AUTH_DISABLED=False).test_client()  # another process, same database
    world.models("a")
    world.token("leaving", "reader")
    world.predict("a", "leaving")
    assert world.predict("a", "leaving")[0] == "fast"
    revoked = elsewhere.delete("/tokens/leaving", headers=world.headers("admin"))
    assert revoked.status_code == 200, revoked.get_data(as_text=True)
    started = time.monotonic()
    while (answer := world.predict("a", "leaving"))[1].status_code == 200:
        assert time.monotonic() - started < refresh + 0.5, "still served after the refresh"
        time.sleep(0.01)
    assert answer[0] == "flask" and answer[1].status_code == 401
    assert world.predict("a", "leaving")[0] == "flask"  # and never served fast again
    # The other tokens are checked again once, then served fast again.
    assert world.predict("a", "admin")[0] == "flask"
    assert world.predict("a", "admin")[0] == "fast"


def test_an_expired_token_is_refused(make_app):
    world = AuthWorld(make_app(AUTH_DISABLED=False))
    world.models("a")
    lifetime = 1.0
    world.token("brief", "reader", expires_in=timedelta(seconds=lifetime))
    created = time.monotonic()
    assert world.predict("a", "brief")[1].status_code == 200
    if time.monotonic() - created < lifetime / 2:  # too slow a machine proves nothing here
        assert world.predict("a", "brief")[0] == "fast"
    time.sleep(max(0.0, lifetime - (time.monotonic() - created)) + 0.05)
    layer, response = world.predict("a", "brief")
    assert (layer, response.status_code) == ("flask", 401)
    assert "expired" in problem(response)["detail"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer mr_not-a-token", "Basic dXNlcjpwYXNz", "Bearer ", "Bearer " + "x" * 300],
    ids=["none", "unknown", "basic", "empty", "too long"],
)
def test_requests_without_a_valid_token_are_401(world, authorization):
    world.models("a")
    headers = {} if authorization is None else {"Authorization": authorization}
    for _ in range(2):
        layer, response = answered_by(
            world.app, lambda: predict(world.client, "a", 1, headers=headers)
        )
        assert (layer, response.status_code) == ("flask", 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        problem(response)


# ---- metrics and the access log ------------------------------------------------------------------


def sample(client, name: str, **labels: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}") + 1]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_fast_path_answers_like_flask_answers(app, client):
    reg(client, "m", linear_artifact())
    reg(client, "m", linear_artifact(100.0))
    labels = {"route": ROUTE, "model": "m", "status": "200"}
    assert ROUTE == "/models/<name>/<ref>/predict"

    def counts(version: str) -> tuple[float, float]:
        selected = {**labels, "version": version}
        return (
            sample(client, "modelreg_http_requests_total", method="POST", **selected),
            sample(client, "modelreg_http_request_duration_seconds_count", **selected),
        )

    assert counts("1") == (0.0, 0.0)
    flask_predict(app, client, "m", 1)
    assert counts("1") == (1.0, 1.0)  # Flask's own count: the series the fast path must use
    n = 5
    for _ in range(n):
        fast_predict(app, client, "m", 1)
    assert counts("1") == (1.0 + n, 1.0 + n)
    assert counts("2") == (0.0, 0.0)

    flask_predict(app, client, "m", "latest")
    for _ in range(n):
        fast_predict(app, client, "m", "latest")
    assert counts("2") == (1.0 + n, 1.0 + n)
    assert counts("1") == (1.0 + n, 1.0 + n)
    assert fastpath(app).answered == 2 * n


def test_the_access_log_line_is_the_same_from_both_layers(app, client, caplog):
    reg(client, "m", linear_artifact())
    fields = ("method", "path", "status", "model", "version", "actor", "request_id")
    lines = []
    for send in (flask_predict, fast_predict):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="modelreg.access"):
            send(app, client, "m", 1, headers={"X-Request-ID": "logged"})
        [record] = [r for r in caplog.records if r.name == "modelreg.access"]
        assert record.latency_ms >= 0
        lines.append((record.getMessage(), {f: getattr(record, f) for f in fields}))
    assert lines[0] == lines[1]
    assert lines[1] == (
        "POST /models/m/1/predict 200",
        {
            "method": "POST",
            "path": "/models/m/1/predict",
            "status": 200,
            "model": "m",
            "version": "1",
            "actor": "anonymous",
            "request_id": "logged",
        },
    )


# ---- over a real socket --------------------------------------------------------------------------


def test_over_http_the_fast_path_answers_and_chunked_bodies_reach_flask(app):
    server = LiveServer(app)
    try:
        url = f"{server.url}/models/m/1/predict"
        with requests.Session() as session:
            reg(app.test_client(), "m", linear_artifact())
            answers = []
            for _ in range(3):
                layer, response = answered_by(app, lambda: session.post(url, json=BODY, timeout=30))
                answers.append(layer)
                assert response.status_code == 200, response.text
                assert np.allclose(response.json()["predictions"], linear().predict(ROWS))
            assert answers == ["flask", "fast", "fast"]

            data = b'{"instances": [[1, 2, 3]]}'
            layer, response = answered_by(
                app,
                lambda: session.post(
                    url,
                    data=iter([data[:7], data[7:]]),  # a generator body is sent chunked
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                ),
            )
            assert (layer, response.status_code) == ("flask", 200), response.text
            assert np.allclose(response.json()["predictions"], linear().predict([[1, 2, 3]]))
    finally:
        server.stop()


# ---- declined requests leave no trace -------------------------------------------------------


def test_a_bad_request_answered_from_memory_counts_one_cache_hit(app, client):
    reg(client, "m", linear_artifact())
    flask_predict(app, client, "m", 1)

    def hits() -> int:
        return client.get("/serving/cache").get_json()["stats"]["hits"]

    before = hits()
    fast_predict(app, client, "m", 1)
    assert hits() == before + 1
    before = hits()
    assert fast_predict(app, client, "m", 1, {"instances": [[1, 2]]}).status_code == 422
    assert hits() == before + 1


def test_a_terminated_input_without_content_length_is_left_intact(app, client):
    reg(client, "m", linear_artifact())
    flask_predict(app, client, "m", 1)
    fast_predict(app, client, "m", 1)
    data = b'{"instances": [[1, 2, 3]]}'

    def environ() -> dict[str, Any]:
        # What an HTTP/2 server gives for a body sent without content-length.
        built = EnvironBuilder(
            path="/models/m/1/predict",
            method="POST",
            input_stream=io.BytesIO(data),
            content_type="application/json",
        ).get_environ()
        built.pop("CONTENT_LENGTH", None)
        built["wsgi.input_terminated"] = True
        return built

    flask_only = run_wsgi_app(fastpath(app).app, environ())
    assert flask_only[1] == "200 OK"  # Flask reads a terminated input to its end
    iterable, status, _ = run_wsgi_app(app, environ())
    assert status == "200 OK", b"".join(iterable)
