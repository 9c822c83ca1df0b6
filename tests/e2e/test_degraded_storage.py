"""The S3 artifact store goes away and comes back: cached models serve, the rest answers 503.

A real SeaweedFS server is killed (the session one, shared with other tests: it is always
started again in a `finally`) under an app on the production storage shape.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.e2e.servers import StoreView, env_strings, modelreg_cli, wait_until
from tests.helpers import problem, register

pytestmark = pytest.mark.slow

FAST = 10.0  # seconds: an outage answer must not hang on timeouts and retries


@pytest.fixture
def config(tmp_path, database_url, s3_url, s3_config_overrides):
    return make_config(tmp_path, database_url, STORAGE_URL=s3_url, **s3_config_overrides)


@pytest.fixture
def app(config):
    from manage import create_app

    application = create_app(config)
    yield application
    application.extensions["modelreg"].engine.dispose()


@pytest.fixture
def outage(seaweedfs):
    """Call it to stop SeaweedFS (a crash); it is started again whatever happens."""
    try:
        yield seaweedfs.stop
    finally:
        seaweedfs.start()


def _predict(client, ref: str):
    return client.post(f"/models/price/{ref}/predict", json={"instances": [[1.0, 2.0, 3.0]]})


def _referenced(client) -> set[str]:
    digests = set()
    for model in client.get("/models").json["models"]:
        for version in client.get(f"/models/{model['name']}/versions").json["versions"]:
            digests.add(version["sha256"])
            accel = version.get("acceleration") or {}
            blob = accel.get("numpy") or accel  # a linear model's numpy form, or ONNX
            if accel.get("status") == "ready" and blob.get("sha256"):
                digests.add(blob["sha256"])
    return digests


def test_cached_models_serve_through_an_s3_outage_and_everything_recovers(
    app, config, seaweedfs, outage
):
    client = app.test_client()
    view = StoreView({"STORAGE_URL": config.STORAGE_URL, **_staging(config)}, seaweedfs.client())
    first = joblib_bytes(fit_linear())
    assert register(client, "price", first).status_code == 201
    assert register(client, "price", joblib_bytes(fit_linear(offset=5))).status_code == 201
    assert client.post("/models/price/versions/1/promote", json={}).status_code == 200
    assert _predict(client, "1").status_code == 200  # v1 is cached now; v2 never loaded
    assert client.get("/readyz").status_code == 200

    outage()
    started = time.monotonic()
    pinned = _predict(client, "1")
    assert pinned.status_code == 200 and pinned.json["version"] == 1
    alias = _predict(client, "production")
    assert alias.status_code == 200 and alias.json["version"] == 1
    assert "X-Model-Stale" not in alias.headers  # the registry answered: nothing is stale

    cold = _predict(client, "2")
    assert cold.status_code == 503 and problem(cold)["title"] == "Service unavailable"
    assert cold.headers["Retry-After"] == "1"
    assert "cached models keep serving" in problem(cold)["detail"]

    write = register(client, "price", joblib_bytes(fit_linear(offset=9)))
    assert write.status_code == 503 and problem(write)["status"] == 503
    assert view.staged() == []  # the refused upload left no staged file behind

    download = client.get("/models/price/versions/1/artifact")
    assert download.status_code == 503 and problem(download)["status"] == 503

    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["status"] == "unavailable"
    assert ready.json["checks"]["storage"]["status"] == "unavailable"
    assert ready.json["checks"]["database"]["status"] == "ok"
    assert seaweedfs.secret_key not in ready.get_data(as_text=True)
    assert time.monotonic() - started < FAST, "outage answers must come quickly"
    # Reads of the registry itself do not need the store.
    assert client.get("/models/price/versions/2").status_code == 200

    seaweedfs.start()  # same app, no restart
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, what="readyz")
    # /readyz asks S3 for the bucket; a restarted SeaweedFS answers that a moment before its
    # volume server serves objects again (GET fails with InternalError meanwhile, a 503 here).
    wait_until(lambda: _predict(client, "2").status_code == 200, timeout=30, what="v2 to load")
    recovered = _predict(client, "2")
    assert recovered.status_code == 200 and recovered.json["version"] == 2
    third = register(client, "price", joblib_bytes(fit_linear(offset=9)))
    assert third.status_code == 201 and third.json["version"] == 3
    download = client.get("/models/price/versions/1/artifact")
    assert download.status_code == 200 and download.data == first

    # After the fault: gc leaves no orphan and removes no referenced blob.
    assert client.delete("/models/price/versions/3").status_code == 204
    env = env_strings(
        {
            "DATABASE_URL": config.DATABASE_URL,
            "STORAGE_URL": config.STORAGE_URL,
            "INSTANCE_PATH": config.INSTANCE_PATH,
            **{k: getattr(config, k) for k in dir(config) if k.startswith("S3_")},
        }
    )
    assert third.json["sha256"] in view.digests()
    modelreg_cli("storage", "gc", "--grace-minutes", "0", env=env)
    assert view.digests() == _referenced(client)
    assert third.json["sha256"] not in view.digests()
    assert view.multipart_uploads() == []
    assert _predict(client, "2").status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_promotion_during_an_s3_outage_is_503_not_a_refusal(app, outage):
    client = app.test_client()
    assert register(client, "price", joblib_bytes(fit_linear())).status_code == 201
    outage()
    promoted = client.post("/models/price/versions/1/promote", json={})
    assert promoted.status_code == 503, promoted.json
    assert promoted.headers["Retry-After"] == "1"


def _staging(config) -> dict[str, str]:
    return {"S3_STAGING_DIR": config.S3_STAGING_DIR}
