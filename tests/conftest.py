"""Shared fixtures: a fresh app per test on SQLite and on PostgreSQL, tiny real models."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import joblib
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from config import TestConfig

POSTGRES_URL = os.environ.get(
    "MODELREG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def _postgres_reachable() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as error:  # any failure means "not reachable"
        return f"{type(error).__name__}: {error}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    problem = _postgres_reachable()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a brand-new schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(postgres_admin_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_admin_url else "?"
    yield f"{postgres_admin_url}{separator}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(autouse=True)
def _private_modelreg_home(tmp_path_factory, monkeypatch) -> None:
    """No test reads or writes the real per-user data folder: the embedded default of every
    test (and of every process it starts) lives in a temporary folder."""
    base = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("MODELREG_HOME", str(base / "modelreg-home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "xdg-data"))
    for name in ("MODELREG_URL", "MODELREG_TOKEN", "INSTANCE_PATH"):
        monkeypatch.delenv(name, raising=False)


def make_config(tmp_path, database_url: str | None = None, **overrides) -> TestConfig:
    return TestConfig(
        INSTANCE_PATH=str(tmp_path / "instance"),
        DATABASE_URL=database_url or "",
        **overrides,
    ).resolved()


def close_app(application) -> None:
    """Stop what an app started: its shadow process, its database connections."""
    services = application.extensions["modelreg"]
    if services.dataplane.shadows is not None:
        services.dataplane.shadows.stop()
    services.engine.dispose()


@pytest.fixture
def app(tmp_path, database_url: str):
    from manage import create_app

    application = create_app(make_config(tmp_path, database_url))
    yield application
    close_app(application)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def sqlite_app(tmp_path):
    from manage import create_app

    application = create_app(make_config(tmp_path))
    yield application
    close_app(application)


@pytest.fixture
def sqlite_client(sqlite_app):
    return sqlite_app.test_client()


# ---- tiny real models ------------------------------------------------------------------


def fit_linear(n_features: int = 3, seed: int = 0, offset: float = 0.0):
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(seed)
    X = rng.random((20, n_features))
    y = X @ np.arange(1, n_features + 1) + offset
    return LinearRegression().fit(X, y)


def fit_classifier(n_features: int = 4, seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    X = rng.random((40, n_features))
    y = np.where(X[:, 0] > 0.5, "high", "low")
    return LogisticRegression().fit(X, y)


def joblib_bytes(model) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def skops_bytes(model) -> bytes:
    import skops.io

    return skops.io.dumps(model)


@pytest.fixture
def linear_bytes() -> bytes:
    return joblib_bytes(fit_linear())


class LiveServer:
    """The app on a real threaded HTTP server on a loopback port, for concurrency tests."""

    def __init__(self, application) -> None:
        import threading

        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, application, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(app):
    server = LiveServer(app)
    yield server
    server.stop()


# ---- S3 object storage: a real SeaweedFS, started once per session -----------------------


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """A SeaweedFS S3 server on loopback (see tests/s3.py); skipped if it cannot start,
    except under CI=true where that is a failure."""
    from tests.s3 import SeaweedUnavailable, launch

    try:
        server = launch(tmp_path_factory.mktemp("seaweedfs"))
    except SeaweedUnavailable as error:
        if IN_CI:
            pytest.fail(f"SeaweedFS is required under CI=true but did not start: {error}")
        pytest.skip(f"SeaweedFS unavailable: {error}")
    yield server
    server.close()


@pytest.fixture
def s3_url(seaweedfs) -> str:
    """A fresh prefix in the test bucket, so tests never see each other's blobs."""
    seaweedfs.start()  # no-op when running; brings it back if a fault test left it stopped
    return f"s3://{seaweedfs.bucket}/t-{uuid.uuid4().hex}"


@pytest.fixture
def s3_config_overrides(seaweedfs, tmp_path) -> dict:
    """The S3_* settings for `make_config(...)`, with a per-test staging folder."""
    return seaweedfs.config_overrides(S3_STAGING_DIR=str(tmp_path / "s3-staging"))
