"""The Python client, in-process (`Client.for_app`) and against a real HTTP server."""

from __future__ import annotations

import hashlib
import io
import pickle
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import requests
from werkzeug.serving import make_server

from registry.client import (
    EMBEDDED_URL,
    ApiError,
    Client,
    ConnectionFailed,
    IntegrityError,
    check_etag,
)
from storage.base import key_for
from tests.conftest import fit_classifier, fit_linear, joblib_bytes

FEATURES = ["rooms", "area", "age"]


def fit_frame_model() -> tuple[Any, pd.DataFrame]:
    """A regressor fitted on a DataFrame, so the server knows its feature names."""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.random((30, 3)), columns=FEATURES)
    target = frame["rooms"] * 3 + frame["area"] - frame["age"]
    return LinearRegression().fit(frame, target), frame


@pytest.fixture
def api(app) -> Client:
    return Client.for_app(app)


@pytest.fixture
def sqlite_api(sqlite_app) -> Client:
    return Client.for_app(sqlite_app)


# ---- registration ------------------------------------------------------------------------


def test_register_estimator_defaults_to_skops_and_serves(api: Client) -> None:
    model = fit_linear()
    record = api.register("price", model, description="first", tags={"team": "pricing"})

    assert record["name"] == "price"
    assert record["version"] == 1
    assert record["format"] == "skops"
    assert record["status"] == "ready"
    assert record["description"] == "first"
    assert record["tags"] == {"team": "pricing"}
    assert record["signature"]["n_features"] == 3
    assert len(record["sha256"]) == 64 and record["size"] > 0

    X = np.random.default_rng(3).random((4, 3))
    answer = api.predict("price", 1, X)
    assert answer["model"] == "price" and answer["version"] == 1
    assert answer["predictions"] == pytest.approx(model.predict(X).tolist())


def test_register_estimator_as_joblib(sqlite_api: Client) -> None:
    record = sqlite_api.register("jl", fit_linear(), format="joblib")
    assert record["format"] == "joblib"
    assert sqlite_api.predict("jl", "latest", [[1.0, 2.0, 3.0]])["version"] == 1


def test_register_from_path_infers_format_from_extension(sqlite_api: Client, tmp_path) -> None:
    data = joblib_bytes(fit_linear())
    for suffix in ("joblib", "pkl"):
        path = tmp_path / f"model.{suffix}"
        path.write_bytes(data)
        record = sqlite_api.register("from-path", path)
        assert record["format"] == "joblib"
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["size"] == len(data)
    # str paths work too, and an explicit format wins over the extension
    odd = tmp_path / "model.bin"
    odd.write_bytes(data)
    assert sqlite_api.register("from-path", str(odd), format="joblib")["version"] == 3
    with pytest.raises(ValueError, match="format"):
        sqlite_api.register("from-path", odd)


def test_register_from_bytes_and_file_objects(sqlite_api: Client) -> None:
    data = joblib_bytes(fit_linear())
    record = sqlite_api.register("raw", data, format="joblib")
    assert (record["format"], record["size"]) == ("joblib", len(data))
    with pytest.raises(ValueError, match="format is required"):
        sqlite_api.register("raw", data)

    assert sqlite_api.register("raw", io.BytesIO(data), format="joblib")["version"] == 2

    class Unseekable(io.RawIOBase):
        """A pipe-like stream: the client must spool it to learn its length."""

        def __init__(self, payload: bytes) -> None:
            self._inner = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            chunk = self._inner.read(min(len(buffer), 1000))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    record = sqlite_api.register("raw", Unseekable(data), format="joblib")
    assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_register_metadata_round_trip_with_dataframe_example(api: Client) -> None:
    model, frame = fit_frame_model()
    record = api.register(
        "houses",
        model,
        description="linear on three features",
        tags={"stage": "dev"},
        metrics={"rmse": np.float32(0.25), "r2": np.float64(0.9)},
        params={"fit_intercept": True, "alpha": np.float64(0.5), "layers": [1, 2]},
        source={"run": "run-42", "data": "s3://bucket/houses.parquet", "code": "abc123"},
        input_example=frame.head(2),
    )
    assert record["input_example"] == [
        {name: pytest.approx(float(frame[name].iloc[i])) for name in FEATURES} for i in range(2)
    ]
    assert all(type(v) is float for row in record["input_example"] for v in row.values())
    assert record["metrics"] == {"rmse": 0.25, "r2": pytest.approx(0.9)}
    assert record["params"] == {"fit_intercept": True, "alpha": 0.5, "layers": [1, 2]}
    assert record["source"] == {
        "run": "run-42",
        "data": "s3://bucket/houses.parquet",
        "code": "abc123",
    }
    assert record["signature"]["feature_names"] == FEATURES
    assert api.get_version("houses", 1) == record
    # the example is predicted before the alias moves, so promotion exercises it end to end
    assert api.promote("houses", 1)["version"] == 1


def test_input_example_from_ndarray_becomes_plain_rows(sqlite_api: Client) -> None:
    example = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    record = sqlite_api.register("arr", fit_linear(), input_example=example)
    assert record["input_example"] == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    with pytest.raises(ValueError, match="2-D"):
        sqlite_api.register("arr", fit_linear(), input_example=np.ones(3))


def test_invalid_metadata_is_a_422_naming_the_field(sqlite_api: Client) -> None:
    with pytest.raises(ApiError) as caught:
        sqlite_api.register("bad", fit_linear(), source={"run": "r", "branch": "main"})
    error = caught.value
    assert error.status == 422
    assert error.errors and any(key.startswith("metadata.source") for key in error.errors)


# ---- models and versions -------------------------------------------------------------------


def test_model_crud(api: Client) -> None:
    created = api.create_model("crud", description="d", tags={"a": "1", "b": "2"})
    assert created["name"] == "crud" and created["aliases"] == {}
    with pytest.raises(ApiError) as caught:
        api.create_model("crud")
    assert caught.value.status == 409

    updated = api.update_model("crud", description="new", tags={"a": None, "c": "3"}, reason="r")
    assert updated["description"] == "new"
    assert updated["tags"] == {"b": "2", "c": "3"}
    assert api.get_model("crud")["tags"] == {"b": "2", "c": "3"}

    api.delete_model("crud", reason="cleanup")
    with pytest.raises(ApiError) as caught:
        api.get_model("crud")
    assert caught.value.status == 404


def test_list_models_follows_every_page_and_filters(api: Client) -> None:
    names = [f"model-{i:02d}" for i in range(7)]
    for i, name in enumerate(names):
        api.create_model(name, tags={"team": "a" if i % 2 else "b"})
    api.create_model("other")

    listed = api.list_models(limit=3)  # 8 models, pages of 3
    assert sorted(m["name"] for m in listed) == sorted([*names, "other"])
    assert len({m["name"] for m in listed}) == 8

    assert sorted(m["name"] for m in api.list_models(q="model-", limit=2)) == names
    team_a = [n for i, n in enumerate(names) if i % 2]
    assert sorted(m["name"] for m in api.list_models(tag="team:a", limit=2)) == team_a
    assert len(api.list_models(tag={"team": None})) == 7
    assert len(api.list_models(tag=["team:a", "team"])) == len(team_a)


def test_tag_filters_match_non_ascii_and_quoted_keys_on_sqlite(sqlite_api: Client) -> None:
    tags = {"команда": "ценообразование", 'say"hi': "x"}
    sqlite_api.create_model("intl", tags=tags)
    sqlite_api.register("intl", joblib_bytes(fit_linear()), format="joblib", tags=tags)
    assert sqlite_api.get_model("intl")["tags"] == tags  # stored and returned correctly
    for tag in ("команда", "команда:ценообразование", 'say"hi', 'say"hi:x'):
        assert [m["name"] for m in sqlite_api.list_models(tag=tag)] == ["intl"], tag
        assert [v["version"] for v in sqlite_api.list_versions("intl", tag=tag)] == [1], tag


def test_versions_list_update_archive_delete(api: Client) -> None:
    data = joblib_bytes(fit_linear())
    for _ in range(5):
        api.register("ver", data, format="joblib")

    versions = api.list_versions("ver", limit=2)
    assert sorted(v["version"] for v in versions) == [1, 2, 3, 4, 5]

    edited = api.update_version("ver", 2, description="two", tags={"k": "v"}, reason="note")
    assert (edited["description"], edited["tags"]) == ("two", {"k": "v"})

    assert api.archive("ver", 5, reason="bad data")["status"] == "archived"
    assert api.get_version("ver")["version"] == 4  # latest skips archived versions
    assert [v["version"] for v in api.list_versions("ver", status="archived")] == [5]
    assert len(api.list_versions("ver", status="ready", limit=1)) == 4

    api.promote("ver", 4)
    with pytest.raises(ApiError) as caught:
        api.delete_version("ver", 4)
    assert caught.value.status == 409
    api.delete_version("ver", 3, reason="superseded")
    with pytest.raises(ApiError) as caught:
        api.get_version("ver", 3)
    assert caught.value.status == 404
    assert api.register("ver", data, format="joblib")["version"] == 6  # never reused

    deleted = api.events("ver", type="delete_version")
    assert [(e["version"], e["reason"]) for e in deleted] == [(3, "superseded")]


# ---- aliases and the audit trail -----------------------------------------------------------


def test_promote_rollback_aliases_events_round_trip(api: Client) -> None:
    for offset in (0.0, 10.0, 20.0):
        api.register("rt", fit_linear(offset=offset))

    first = api.promote("rt", 1, reason="launch")
    assert first == {"name": "rt", "alias": "production", "version": 1, "previous_version": None}
    assert api.promote("rt", 2, reason="better")["previous_version"] == 1
    assert api.promote("rt", 3, reason="best")["previous_version"] == 2
    api.promote("rt", 1, alias="staging", reason="canary")
    assert api.aliases("rt") == {"production": 3, "staging": 1}
    assert api.get_model("rt")["aliases"] == {"production": 3, "staging": 1}
    assert api.predict("rt", "production", [[0.0, 0.0, 0.0]])["version"] == 3

    back = api.rollback("rt", reason="v3 regressed")
    assert (back["version"], back["previous_version"]) == (2, 3)
    assert api.rollback("rt", reason="v2 too")["version"] == 1
    with pytest.raises(ApiError) as caught:
        api.rollback("rt", reason="nothing left")
    assert caught.value.status == 409
    assert api.aliases("rt")["production"] == 1
    assert api.predict("rt", "production", [[0.0, 0.0, 0.0]])["version"] == 1

    api.delete_alias("rt", "staging", reason="canary over")
    assert api.aliases("rt") == {"production": 1}

    promotions = api.events("rt", type="promote")
    assert [(e["version"], e["alias"], e["reason"]) for e in promotions] == [
        (1, "staging", "canary"),
        (3, "production", "best"),
        (2, "production", "better"),
        (1, "production", "launch"),
    ]
    rollbacks = api.events("rt", type="rollback")
    assert [(e["before"], e["after"], e["reason"]) for e in rollbacks] == [
        ({"version": 2}, {"version": 1}, "v2 too"),
        ({"version": 3}, {"version": 2}, "v3 regressed"),
    ]
    everything = api.events("rt")
    assert everything[0]["type"] == "delete_alias"
    assert everything[0]["reason"] == "canary over"
    assert everything[-1]["type"] == "create"
    assert [e["type"] for e in everything].count("register") == 3
    assert api.events("rt", limit=2) == everything[:2]
    assert all(e["actor"] and e["at"] for e in everything)


def test_promote_compare_and_set(api: Client) -> None:
    data = joblib_bytes(fit_linear())
    for _ in range(3):
        api.register("cas", data, format="joblib")

    # None is sent as JSON null: "the alias must not exist yet"
    assert api.promote("cas", 1, expected_version=None)["version"] == 1
    with pytest.raises(ApiError) as caught:
        api.promote("cas", 2, expected_version=None, reason="race")
    error = caught.value
    assert error.status == 409
    assert error.title == "Conflict"
    assert "production" in error.detail
    assert error.errors == {"expected_version": "alias is at version 1"}
    assert str(error).startswith("409 Conflict: alias 'production'")
    assert str(error).endswith(str(error.errors))

    with pytest.raises(ApiError) as caught:
        api.promote("cas", 3, expected_version=2)
    assert caught.value.status == 409
    assert api.aliases("cas") == {"production": 1}

    assert api.promote("cas", 2, expected_version=1)["previous_version"] == 1
    assert api.promote("cas", 3)["previous_version"] == 2  # not given: unconditional


# ---- downloads and integrity ---------------------------------------------------------------


def test_download_bytes_and_files_are_exact(api: Client, tmp_path) -> None:
    data = joblib_bytes(fit_linear())
    record = api.register("dl", data, format="joblib")
    expected_sha = hashlib.sha256(data).hexdigest()
    assert record["sha256"] == expected_sha

    assert api.download("dl") == data
    assert api.download("dl", 1) == data

    target = tmp_path / "out" / "model.joblib"
    target.parent.mkdir()
    written = api.download("dl", "latest", target)
    assert written == target
    assert target.read_bytes() == data
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected_sha

    into_dir = api.download("dl", 1, tmp_path)
    assert into_dir == tmp_path / "dl-v1.joblib"
    assert into_dir.read_bytes() == data
    assert not list(tmp_path.rglob("*.part"))


def test_download_of_a_corrupted_blob_raises_and_writes_nothing(sqlite_app, tmp_path) -> None:
    api = Client.for_app(sqlite_app)
    data = joblib_bytes(fit_linear())
    sha = api.register("bad-blob", data, format="joblib")["sha256"]
    # corrupt the stored bytes (same size) behind the server's back, like a bad disk would
    blob = Path(sqlite_app.extensions["modelreg"].store.root) / key_for(sha)
    blob.chmod(0o600)
    tampered = bytes([data[0] ^ 0xFF]) + data[1:]
    blob.write_bytes(tampered)

    with pytest.raises(IntegrityError) as caught:
        api.download("bad-blob")
    assert caught.value.errors == {
        "sha256": f"expected {sha}, got {hashlib.sha256(tampered).hexdigest()}"
    }
    target = tmp_path / "dest" / "model.joblib"
    target.parent.mkdir()
    with pytest.raises(IntegrityError):
        api.download("bad-blob", 1, target)
    assert list(target.parent.iterdir()) == []  # neither the file nor a partial one


def test_check_etag_accepts_the_matching_digest() -> None:
    digest = hashlib.sha256(b"model").hexdigest()
    check_etag(f'"{digest}"', digest)
    check_etag(f'W/"{digest}"', digest)
    check_etag(digest.upper(), digest)


@pytest.mark.parametrize(
    ("etag", "reason"),
    [
        (f'"{hashlib.sha256(b"other").hexdigest()}"', "expected"),
        (None, "missing"),
        ("", "missing"),
        ('"not-a-digest"', "missing"),
    ],
)
def test_check_etag_rejects_tampered_or_missing_digests(etag: str | None, reason: str) -> None:
    digest = hashlib.sha256(b"model").hexdigest()
    with pytest.raises(IntegrityError) as caught:
        check_etag(etag, digest)
    error = caught.value
    assert isinstance(error, ApiError)
    assert error.status == 0
    assert error.title == "Artifact integrity check failed"
    assert reason in error.errors["sha256"]
    assert str(error).startswith("Artifact integrity check failed: ")


# ---- serving -------------------------------------------------------------------------------


def test_predict_accepts_ndarray_dataframe_rows_and_columns(api: Client) -> None:
    model, frame = fit_frame_model()
    api.register("pred", model)
    rows = frame.head(5)
    expected = pytest.approx(model.predict(rows).tolist())

    by_frame = api.predict("pred", 1, rows)
    assert by_frame["predictions"] == expected
    assert api.predict("pred", 1, rows.to_numpy())["predictions"] == expected
    assert api.predict("pred", 1, rows.to_numpy().tolist())["predictions"] == expected
    assert api.predict("pred", 1, rows.to_dict(orient="records"))["predictions"] == expected
    assert api.predict("pred", 1, rows.to_dict(orient="list"))["predictions"] == expected
    # columns given in another order are matched by name
    assert api.predict("pred", "latest", rows[FEATURES[::-1]])["predictions"] == expected
    # non-contiguous and float32 arrays go through the same path
    wide = np.asfortranarray(rows.to_numpy(dtype=np.float32))
    assert api.predict("pred", 1, wide)["predictions"] == pytest.approx(
        model.predict(rows).tolist(), rel=1e-5
    )
    with pytest.raises(ValueError, match="2-D"):
        api.predict("pred", 1, np.ones(3))


def test_predict_proba_returns_classes(api: Client) -> None:
    model = fit_classifier()
    api.register("clf", model)
    X = np.random.default_rng(5).random((3, 4))
    answer = api.predict("clf", 1, X, method="predict_proba")
    assert answer["classes"] == ["high", "low"]
    assert np.allclose(answer["predictions"], model.predict_proba(X))
    labels = api.predict("clf", 1, X)
    assert labels["predictions"] == model.predict(X).tolist()
    assert "classes" not in labels


# ---- errors --------------------------------------------------------------------------------


def test_api_error_fields_on_404(api: Client) -> None:
    with pytest.raises(ApiError) as caught:
        api.get_version("ghost", 1)
    error = caught.value
    assert error.status == 404
    assert error.title == "Not found"
    assert "ghost" in error.detail
    assert error.errors is None
    assert error.body["status"] == 404 and error.body["type"].startswith("urn:modelreg:")
    assert error.request_id == error.body["request_id"]
    assert str(error) == f"404 Not found: {error.detail}"

    with pytest.raises(ApiError) as caught:
        api.predict("ghost", "production", [[1.0]])
    assert caught.value.status == 404


def test_api_error_fields_on_422(api: Client) -> None:
    api.register("width", fit_linear())
    with pytest.raises(ApiError) as caught:
        api.predict("width", 1, [[1.0, 2.0]])  # the model takes 3 features
    error = caught.value
    assert error.status == 422
    assert error.title
    assert error.errors  # names the offending row/field
    assert str(error).startswith("422 ")

    with pytest.raises(ApiError) as caught:
        api.update_version("width", 1, status="deleted")
    assert caught.value.status == 422
    assert set(caught.value.errors) == {"status"}


def test_api_error_pickles() -> None:
    error = ApiError(409, "Conflict", "taken", {"name": "exists"}, {"status": 409})
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.status, copy.title, copy.detail, copy.errors, copy.body) == (
        409,
        "Conflict",
        "taken",
        {"name": "exists"},
        {"status": 409},
    )
    assert str(copy) == "409 Conflict: taken {'name': 'exists'}"


def test_health_and_ready(api: Client) -> None:
    assert api.health() == {"status": "ok"}
    ready = api.ready()
    assert ready["status"] == "ready"
    assert set(ready["checks"]) == {"database", "storage"}


def test_connection_failure_is_an_api_error_and_a_requests_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ConnectionFailed) as caught:
        client.health()
    assert isinstance(caught.value, ApiError)
    assert isinstance(caught.value, requests.ConnectionError)
    assert caught.value.status == 0
    assert str(caught.value).startswith("Connection failed: GET ")


# ---- the in-process transport --------------------------------------------------------------


def _echo_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """A bare WSGI app that reports what it received, in several chunks."""
    from werkzeug.wsgi import get_input_stream

    body = get_input_stream(environ).read()
    report = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "authorization": environ.get("HTTP_AUTHORIZATION"),
        "content_type": environ.get("CONTENT_TYPE"),
        "body": body.decode(),
    }
    start_response("201 Created", [("Content-Type", "application/json"), ("X-Echo", "1")])
    payload = orjson.dumps(report)
    return iter([payload[:5], b"", payload[5:]])


def test_wsgi_adapter_passes_requests_and_streams_responses() -> None:
    client = Client.for_app(_echo_app, token="s3cret")

    def chunks() -> Iterator[bytes]:  # no length: sent as a chunked, terminated stream
        yield b"hello "
        yield b"world"

    response = client.session.post(
        f"{EMBEDDED_URL}/a%20b/c?x=1&y=2",
        data=chunks(),
        headers={"Content-Type": "text/plain"},
        stream=True,
    )
    assert response.status_code == 201
    assert response.reason == "Created"
    assert response.headers["x-echo"] == "1"
    report = orjson.loads(b"".join(response.iter_content(3)))
    assert report == {
        "method": "POST",
        "path": "/a b/c",
        "query": "x=1&y=2",
        "authorization": "Bearer s3cret",
        "content_type": "text/plain",
        "body": "hello world",
    }
    plain = Client.for_app(_echo_app).session.get(f"{EMBEDDED_URL}/")
    assert orjson.loads(plain.content)["authorization"] is None


# ---- a real HTTP server ----------------------------------------------------------------------


@pytest.fixture
def http_url(sqlite_app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, sqlite_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_against_a_real_http_server(http_url: str, tmp_path) -> None:
    with Client(http_url, token="any", timeout=30) as client:
        assert client.health() == {"status": "ok"}
        assert client.ready()["status"] == "ready"

        model, frame = fit_frame_model()
        record = client.register("remote", model, input_example=frame.head(2))
        assert (record["version"], record["format"]) == (1, "skops")

        data = joblib_bytes(fit_linear(n_features=3))
        path = tmp_path / "second.joblib"
        path.write_bytes(data)
        assert client.register("remote", path)["version"] == 2  # streamed from disk

        answer = client.predict("remote", 1, frame.head(3))
        assert answer["predictions"] == pytest.approx(model.predict(frame.head(3)).tolist())
        assert client.promote("remote", 1, reason="go", expected_version=None)["version"] == 1

        assert client.download("remote", 2) == data
        target = client.download("remote", 2, tmp_path / "copy.joblib")
        assert target.read_bytes() == data
        skops_copy = client.download("remote", "production")
        assert hashlib.sha256(skops_copy).hexdigest() == record["sha256"]

        assert sorted(v["version"] for v in client.list_versions("remote", limit=1)) == [1, 2]
        assert [e["type"] for e in client.events("remote", limit=2)] == ["promote", "register"]
        with pytest.raises(ApiError) as caught:
            client.get_version("remote", 9)
        assert caught.value.status == 404
        assert caught.value.title == "Not found"


# ---- defaults from the environment, loading a model back ------------------------------------


def test_client_defaults_to_modelreg_url_and_token(http_url: str, monkeypatch) -> None:
    monkeypatch.setenv("MODELREG_URL", http_url + "/")
    monkeypatch.setenv("MODELREG_TOKEN", "mr_from_the_environment")
    seen: list[str] = []
    with Client() as client:
        client.session.hooks["response"].append(
            lambda response, **_: seen.append(response.request.headers["Authorization"])
        )
        assert client.url == http_url
        assert client.health() == {"status": "ok"}
    assert seen == ["Bearer mr_from_the_environment"]
    # An explicit argument wins, and token=None means no token at all.
    assert Client("http://elsewhere:1", token=None).session.auth is None
    monkeypatch.delenv("MODELREG_URL")
    assert Client().url == "http://127.0.0.1:8080"


def test_load_model_gives_back_a_working_estimator(sqlite_api: Client) -> None:
    model = fit_linear()
    sqlite_api.register("loaded", model)
    sqlite_api.register("loaded", joblib_bytes(fit_linear(offset=5.0)), format="joblib")
    X = np.random.default_rng(4).random((5, 3))

    skops_model = sqlite_api.load_model("loaded", 1)
    assert type(skops_model) is type(model)
    np.testing.assert_allclose(skops_model.predict(X), model.predict(X), rtol=1e-9)
    # joblib goes through the server's restricted unpickler, never plain pickle
    pickled = sqlite_api.load_model("loaded", "latest")
    np.testing.assert_allclose(pickled.predict(X), fit_linear(offset=5.0).predict(X), rtol=1e-9)
    from registry.errors import InvalidInput

    with pytest.raises(InvalidInput, match="pickle"):
        sqlite_api.load_model("loaded", 2, allow_pickle=False)


def test_load_model_refuses_bytes_that_do_not_match_the_record(sqlite_app) -> None:
    api = Client.for_app(sqlite_app)
    data = joblib_bytes(fit_linear())
    sha = api.register("tampered", data, format="joblib")["sha256"]
    blob = Path(sqlite_app.extensions["modelreg"].store.root) / key_for(sha)
    blob.chmod(0o600)
    blob.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    with pytest.raises(IntegrityError):
        api.load_model("tampered", 1)


def test_load_model_refuses_a_pickle_naming_an_untrusted_function(sqlite_app) -> None:
    """A pickle that would run code when loaded is judged by the same allowlist as on the
    server: the function it names is never imported or called."""
    import os as os_module

    class Exploit:
        def __reduce__(self):
            return (os_module.system, ("echo owned",))

    api = Client.for_app(sqlite_app)
    evil = pickle.dumps(Exploit())
    with pytest.raises(ApiError):  # the server refuses it at registration already
        api.register("evil", evil, format="joblib")
    from registry.errors import InvalidInput
    from serving.formats import deserialize
    from serving.safeload import TrustPolicy

    with pytest.raises(InvalidInput):  # and so does the loader load_model uses
        deserialize(io.BytesIO(evil), "joblib", trust=TrustPolicy(allow_pickle=True))


def test_token_methods_against_a_server(tmp_path) -> None:
    from manage import create_app
    from registry import auth
    from tests.conftest import LiveServer, make_config

    app = create_app(make_config(tmp_path, AUTH_DISABLED=False))
    secret, _ = auth.create_token(app.extensions["modelreg"].uow, name="root", role="admin",
                                  actor="test")  # fmt: skip
    server = LiveServer(app)
    try:
        with Client(server.url, token=secret) as client:
            made = client.create_token("svc", "reader", models=["price"], expires_in_days=1)
            assert made["token"].startswith("mr_") and made["models"] == ["price"]
            assert {t["name"] for t in client.list_tokens()} == {"root", "svc"}
            assert client.revoke_token("svc")["revoked_at"]
    finally:
        server.stop()
        app.extensions["modelreg"].engine.dispose()
