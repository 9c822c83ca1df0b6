"""Two real server processes on one database and one artifact folder: one truth."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, wait_until

pytestmark = pytest.mark.slow

REFRESH = 1.0


@pytest.fixture
def two_servers(tmp_path, database_url):
    env = {
        "DATABASE_URL": database_url,
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "ALIAS_REFRESH_SECONDS": str(REFRESH),
        "AUTH_DISABLED": "true",
    }
    a = ServerProcess(env, tmp_path, name="a")
    try:
        b = ServerProcess(env, tmp_path, name="b")
    except Exception:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


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


def test_register_on_one_predict_on_other_and_promotions_cross_within_bound(two_servers):
    a, b = two_servers
    _register(a.url, "price", 1)
    _register(a.url, "price", 2)
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


def test_concurrent_registrations_split_across_processes_get_1_to_32(two_servers):
    from concurrent.futures import ThreadPoolExecutor

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
