"""PostgreSQL goes away under a real gunicorn server, and comes back.

The in-process version is test_degraded_database.py; this one runs the production shape as
documented in docs/deployment.md (`modelreg db upgrade`, `modelreg tokens create`, then
`modelreg serve` with gunicorn, MODELREG_ENV=production, bearer tokens, PostgreSQL and an S3
bucket) and stops the cluster under it: pinned and alias predictions keep serving for tokens
already verified (the alias marked stale once ALIAS_REFRESH_SECONDS have passed), writes and
cold versions answer 503, /readyz names the database, and everything recovers without
restarting the server.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import fit_linear, skops_bytes
from tests.e2e.servers import (
    ServerProcess,
    StoreView,
    ThrottledProxy,
    env_strings,
    modelreg_cli,
    referenced_digests,
    wait_until,
)

pytestmark = pytest.mark.slow

REFRESH = 0.5


@pytest.fixture
def env(tmp_path, postgres, s3_url, s3_config_overrides) -> dict[str, str]:
    """The production shape: MODELREG_ENV=production (no pickles, no auto-migration), bearer
    tokens required, PostgreSQL and an S3 bucket."""
    return {
        "MODELREG_ENV": "production",
        "DATABASE_URL": postgres.url,
        "STORAGE_URL": s3_url,
        **env_strings(s3_config_overrides),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "ALIAS_REFRESH_SECONDS": str(REFRESH),
        "AUTH_CACHE_SECONDS": "0.5",
        "DB_CONNECT_TIMEOUT": "2",
    }


@pytest.fixture
def server(tmp_path, env):
    """`modelreg db upgrade`, a token from `modelreg tokens create`, then `modelreg serve`."""
    assert "database at revision" in modelreg_cli("db", "upgrade", env=env)
    token = modelreg_cli("tokens", "create", "--name", "ops", "--role", "admin", env=env).strip()
    process = ServerProcess(env, tmp_path, workers=1, threads=4, name="pg-outage")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    yield process.url, session
    session.close()
    process.stop()


def _register(http, url: str, seed: int) -> requests.Response:
    return http.post(
        f"{url}/models/price/versions",
        files={
            "artifact": ("m.skops", skops_bytes(fit_linear(seed=seed, offset=seed))),
            "metadata": (None, json.dumps({"format": "skops"})),
        },
        timeout=60,
    )


def _predict(http, url: str, ref: str, timeout: float = 30) -> requests.Response:
    return http.post(
        f"{url}/models/price/{ref}/predict", json={"instances": [[1.0, 2.0, 3.0]]}, timeout=timeout
    )


def _is_problem(response: requests.Response, status: int) -> bool:
    return (
        response.status_code == status
        and response.headers["Content-Type"].startswith("application/problem+json")
        and response.json()["status"] == status
    )


def test_a_server_process_serves_through_a_database_outage_and_recovers(
    server, postgres, env, seaweedfs
):
    url, http = server
    assert _register(http, url, 1).status_code == 201
    assert _register(http, url, 2).status_code == 201
    assert http.post(f"{url}/models/price/versions/1/promote", json={}, timeout=30).ok
    assert _predict(http, url, "1").status_code == 200
    assert _predict(http, url, "production").headers["X-Model-Version"] == "1"

    postgres.stop()
    # The alias mapping and the token's verification are now older than their refresh bounds.
    time.sleep(REFRESH + 0.1)
    started = time.monotonic()

    pinned = _predict(http, url, "1")
    assert pinned.status_code == 200 and pinned.json()["version"] == 1
    assert "X-Model-Stale" not in pinned.headers  # a pinned version needs no registry
    alias = _predict(http, url, "production")
    assert alias.status_code == 200 and alias.json()["version"] == 1
    assert alias.headers["X-Model-Stale"] == "true"
    assert alias.headers["Warning"].startswith("110 ")
    # A token never verified by this process cannot be checked now: 503, not 401.
    stranger = requests.post(
        f"{url}/models/price/1/predict",
        json={"instances": [[1.0, 2.0, 3.0]]},
        headers={"Authorization": "Bearer mr_never-seen-by-this-server"},
        timeout=30,
    )
    assert _is_problem(stranger, 503)

    cold = _predict(http, url, "2")  # never resolved in this process: needs the registry
    assert _is_problem(cold, 503) and cold.headers["Retry-After"] == "1"
    write = http.post(f"{url}/models", json={"name": "other"}, timeout=30)
    assert _is_problem(write, 503) and write.headers["Retry-After"] == "1"
    assert _is_problem(_register(http, url, 3), 503)
    ready = requests.get(f"{url}/readyz", timeout=30)  # public: no token needed
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["status"] == "unavailable"
    assert "database" in ready.json()["checks"]["database"]["detail"]
    assert ready.json()["checks"]["storage"]["status"] == "ok"
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200  # alive: no restart
    assert time.monotonic() - started < 15, "outage answers must not hang"

    postgres.start()  # the same server process, never restarted
    wait_until(
        lambda: http.post(f"{url}/models", json={"name": "other"}, timeout=30).status_code == 201,
        timeout=30,
        interval=0.2,
        what="writes to recover",
    )
    wait_until(
        lambda: "X-Model-Stale" not in _predict(http, url, "production").headers,
        timeout=5,
        interval=0.1,
        what="the alias to be fresh again",
    )
    assert _predict(http, url, "2").json()["version"] == 2
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 200
    third = _register(http, url, 3)
    assert third.status_code == 201 and third.json()["version"] == 3

    # After the fault: gc leaves no orphan and removes no referenced blob.
    view = StoreView(env, seaweedfs.client())
    assert http.delete(f"{url}/models/price/versions/3", timeout=30).status_code == 204
    referenced = referenced_digests(url, http)
    orphans = view.digests() - referenced
    assert third.json()["sha256"] in orphans
    out = modelreg_cli("storage", "gc", "--grace-minutes", "0", env=env)
    assert f"deleted {len(orphans)} " in out, out
    assert view.digests() == referenced == referenced_digests(url, http)
    assert _predict(http, url, "1").status_code == 200
    assert _predict(http, url, "2").status_code == 200


def test_a_database_that_stops_answering_does_not_wedge_the_server(tmp_path, postgres):
    proxy = ThrottledProxy("127.0.0.1", postgres.port)
    env = {
        "DATABASE_URL": postgres.url.replace(f":{postgres.port}/", f":{proxy.port}/"),
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "true",
        "ALIAS_REFRESH_SECONDS": str(REFRESH),
        "DB_CONNECT_TIMEOUT": "2",
    }
    server = ServerProcess(env, tmp_path, workers=1, threads=4, name="silent-db")
    try:
        url = server.url
        assert _register(requests, url, 1).status_code == 201
        assert requests.post(f"{url}/models/price/versions/1/promote", json={}, timeout=30).ok
        assert _predict(requests, url, "1").status_code == 200
        assert _predict(requests, url, "production").status_code == 200
        with ThreadPoolExecutor(8) as pool:  # a warm connection pool, as under real traffic
            listed = pool.map(
                lambda _: requests.get(f"{url}/models/price/versions", timeout=30), range(16)
            )
            assert {r.status_code for r in listed} == {200}

        proxy.blackhole = True  # connections stay open; nothing comes back
        time.sleep(REFRESH + 0.1)
        with ThreadPoolExecutor(8) as pool:
            aliases = [pool.submit(_predict, requests, url, "production", 8) for _ in range(8)]
            time.sleep(0.5)
            # A cached pinned version needs no database: it must keep answering.
            assert _predict(requests, url, "1", timeout=5).status_code == 200
            # Alias requests answer from the last known mapping, or 503: never hang.
            assert {f.result().status_code for f in aliases} <= {200, 503}
    finally:
        proxy.blackhole = False  # let the stuck requests finish so that the server stops
        server.stop()
        proxy.close()
