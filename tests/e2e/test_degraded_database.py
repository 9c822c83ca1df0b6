"""The registry database goes away and comes back: serving carries on, writes answer 503."""

from __future__ import annotations

import time

import pytest

from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.e2e.servers import wait_until
from tests.helpers import problem, register

pytestmark = pytest.mark.slow

REFRESH = 0.2


@pytest.fixture
def app(tmp_path, postgres):
    from manage import create_app

    application = create_app(
        make_config(tmp_path, postgres.url, ALIAS_REFRESH_SECONDS=REFRESH, DB_CONNECT_TIMEOUT=2)
    )
    yield application
    application.extensions["modelreg"].engine.dispose()


def _predict(client, ref: str):
    return client.post(f"/models/price/{ref}/predict", json={"instances": [[1.0, 2.0, 3.0]]})


def test_serving_survives_a_database_outage_and_recovers(app, postgres):
    client = app.test_client()
    assert register(client, "price", joblib_bytes(fit_linear())).status_code == 201
    assert register(client, "price", joblib_bytes(fit_linear(offset=5))).status_code == 201
    assert client.post("/models/price/versions/1/promote", json={}).status_code == 200
    assert _predict(client, "1").status_code == 200
    assert _predict(client, "production").headers["X-Model-Version"] == "1"

    postgres.stop()
    time.sleep(REFRESH + 0.05)

    pinned = _predict(client, "1")
    assert pinned.status_code == 200 and pinned.json["version"] == 1
    assert "X-Model-Stale" not in pinned.headers
    alias = _predict(client, "production")
    assert alias.status_code == 200 and alias.json["version"] == 1
    assert alias.headers["X-Model-Stale"] == "true"
    unknown = _predict(client, "2")  # never loaded here: needs the registry
    assert unknown.status_code == 503
    assert problem(unknown)["title"] == "Service unavailable"
    started = time.monotonic()
    write = client.post("/models", json={"name": "other"})
    assert write.status_code == 503 and problem(write)["status"] == 503
    assert write.headers["Retry-After"] == "1"
    assert time.monotonic() - started < 5
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["checks"]["database"]["status"] == "unavailable"
    assert ready.json["checks"]["storage"]["status"] == "ok"

    postgres.start()
    wait_until(
        lambda: client.post("/models", json={"name": "other"}).status_code == 201,
        timeout=30,
        interval=0.2,
        what="writes to recover",
    )
    time.sleep(1.1)  # the resolver's outage back-off
    fresh = _predict(client, "production")
    assert fresh.status_code == 200 and "X-Model-Stale" not in fresh.headers
    assert _predict(client, "2").json["version"] == 2
    assert client.get("/readyz").status_code == 200
