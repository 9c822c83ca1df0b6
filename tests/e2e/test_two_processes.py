"""Two real server processes on one database and one artifact store: one truth.

Every combination of registry database (SQLite, PostgreSQL) and artifact store (a local
folder, an S3 bucket on SeaweedFS); PostgreSQL + S3 is the production shape.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import (
    ServerProcess,
    StoreView,
    env_strings,
    referenced_digests,
    start_servers,
    wait_until,
)

pytestmark = pytest.mark.slow

REFRESH = 1.0


# (database, artifact store). PostgreSQL + S3 is the production shape; SQLite + S3 adds
# nothing the others do not cover, and each combination costs two server start-ups.
DEPLOYMENTS = [
    pytest.param(("sqlite", "local"), id="sqlite-local"),
    pytest.param(("postgresql", "local"), id="postgresql-local", marks=pytest.mark.postgres),
    pytest.param(("postgresql", "s3"), id="postgresql-s3", marks=pytest.mark.postgres),
]


@pytest.fixture(params=DEPLOYMENTS)
def deployment(request, tmp_path) -> dict[str, str]:
    """DATABASE_URL, STORAGE_URL and the S3_* settings shared by both servers."""
    database, storage = request.param
    if database == "sqlite":
        env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}"}
    else:
        env = {"DATABASE_URL": request.getfixturevalue("postgres_url")}
    if storage == "local":
        env["STORAGE_URL"] = (tmp_path / "artifacts").as_uri()
    else:
        env["STORAGE_URL"] = request.getfixturevalue("s3_url")
        env.update(env_strings(request.getfixturevalue("s3_config_overrides")))
    return env


@pytest.fixture
def store_view(request, deployment) -> StoreView:
    """The store both servers use, seen directly (filesystem or boto3)."""
    s3 = "S3_ENDPOINT_URL" in deployment
    return StoreView(deployment, request.getfixturevalue("seaweedfs").client() if s3 else None)


@pytest.fixture
def two_servers(tmp_path, deployment):
    env = {
        **deployment,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "ALIAS_REFRESH_SECONDS": str(REFRESH),
        "AUTH_DISABLED": "true",
    }
    # Start and stop both at once: most of a server's start-up is importing the ML stack.
    started = start_servers(env, tmp_path, [{"name": "a"}, {"name": "b"}])
    yield started[0], started[1]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(ServerProcess.stop, started))


def _register(url: str, name: str, seed: int) -> dict:
    response = requests.post(
        f"{url}/models/{name}/versions",
        files={
            "artifact": ("m.joblib", joblib_bytes(fit_linear(seed=seed, offset=seed))),
            "metadata": (None, json.dumps({"input_example": [[0.1, 0.2, 0.3]]})),
        },
        timeout=60,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _predict(url: str, ref: str) -> requests.Response:
    return requests.post(
        f"{url}/models/price/{ref}/predict", json={"instances": [[0.5, 0.5, 0.5]]}, timeout=30
    )


def test_register_on_one_predict_on_other_and_promotions_cross_within_bound(
    two_servers, store_view
):
    a, b = two_servers
    first = _register(a.url, "price", 1)
    second = _register(a.url, "price", 2)
    # The bytes are in the configured store (the folder, or the bucket under the prefix).
    assert {first["sha256"], second["sha256"]} <= store_view.digests()
    pinned = _predict(b.url, "2")
    assert pinned.status_code == 200 and pinned.json()["version"] == 2

    promoted = requests.post(f"{a.url}/models/price/versions/1/promote", json={}, timeout=30)
    assert promoted.status_code == 200
    assert _predict(b.url, "production").headers["X-Model-Version"] == "1"

    # Promote on B; A must answer with the new version within the staleness bound.
    assert _predict(a.url, "production").headers["X-Model-Version"] == "1"  # A caches v1 now
    moved = requests.post(f"{b.url}/models/price/versions/2/promote", json={}, timeout=30)
    assert moved.status_code == 200
    returned_at = time.monotonic()
    assert _predict(b.url, "production").headers["X-Model-Version"] == "2"  # at once on B
    wait_until(
        lambda: _predict(a.url, "production").headers["X-Model-Version"] == "2",
        timeout=REFRESH + 2,
        interval=0.02,
        what="A to see the promotion",
    )
    elapsed = time.monotonic() - returned_at
    assert elapsed <= REFRESH + 0.25, f"A saw the promotion after {elapsed:.2f}s"

    # Rollback on A is seen by B within the bound too.
    assert (
        requests.post(f"{a.url}/models/price/aliases/production/rollback", timeout=30).status_code
        == 200
    )
    wait_until(
        lambda: _predict(b.url, "production").headers["X-Model-Version"] == "1",
        timeout=REFRESH + 2,
        interval=0.02,
        what="B to see the rollback",
    )


def test_concurrent_registrations_split_across_processes_get_1_to_32(two_servers, store_view):
    a, b = two_servers
    artifact = joblib_bytes(fit_linear())

    def register(i: int) -> requests.Response:
        url = a.url if i % 2 else b.url
        return requests.post(
            f"{url}/models/split/versions",
            files={
                "artifact": ("m.joblib", artifact),
                "metadata": (None, json.dumps({"format": "joblib"})),
            },
            timeout=120,
        )

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(register, range(32)))
    assert [r.status_code for r in responses] == [201] * 32, [r.text for r in responses]
    assert sorted(r.json()["version"] for r in responses) == list(range(1, 33))
    # 32 registrations of the same bytes through two processes: the store holds exactly what
    # the registry references (one shared blob), and no staged upload is left behind.
    assert len({r.json()["sha256"] for r in responses}) == 1
    assert store_view.digests() == referenced_digests(a.url)
    assert store_view.staged() == []
    for url in (a.url, b.url):
        answer = requests.post(
            f"{url}/models/split/32/predict", json={"instances": [[1, 2, 3]]}, timeout=30
        )
        assert answer.status_code == 200, answer.text
