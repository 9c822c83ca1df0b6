"""A traffic policy across two real server processes (gunicorn, 2 workers each) on one
database: the same unit key gets the same version from both, and a change made on one is
followed by the other within the alias refresh bound."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, register_joblib, start_servers, wait_until

pytestmark = pytest.mark.slow

REFRESH = 1.0
ROW = {"instances": [[0.5, 0.5, 0.5]]}


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def two_servers(request, tmp_path):
    if request.param == "sqlite":
        database = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        database = request.getfixturevalue("postgres_url")
    env = {
        "DATABASE_URL": database,
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "ALIAS_REFRESH_SECONDS": str(REFRESH),
        "AUTH_DISABLED": "true",
    }
    started = start_servers(
        env, tmp_path, [{"name": "a", "workers": 2}, {"name": "b", "workers": 2}]
    )
    yield started[0], started[1]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(ServerProcess.stop, started))


def _version(url: str, unit: str | None = None) -> int:
    headers = {"X-Unit-Id": unit} if unit is not None else {}
    response = requests.post(
        f"{url}/models/price/production/predict", json=ROW, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == str(response.json()["version"])
    return response.json()["version"]


def _set_status_and_follow(a, b, units: list[str], status: str, answered_by: int) -> None:
    """Set v2's status through B; on A, `units` are answered by `answered_by` within the
    bound (each unit asked four times: both of A's workers answer some)."""
    changed = requests.patch(
        f"{b.url}/models/price/versions/2", json={"status": status}, timeout=30
    )
    assert changed.status_code == 200, changed.text
    returned_at = time.monotonic()
    wait_until(
        lambda: all(_version(a.url, u) == answered_by for u in units for _ in range(4)),
        timeout=REFRESH + 2,
        interval=0.02,
        what=f"A to follow v2 {status}",
    )
    elapsed = time.monotonic() - returned_at
    assert elapsed <= REFRESH + 0.35, f"A followed v2 {status} after {elapsed:.2f}s"


def test_units_agree_across_processes_and_changes_cross_within_the_bound(two_servers):
    a, b = two_servers
    for seed in (1, 2, 3):
        register_joblib(a.url, "price", joblib_bytes(fit_linear(seed=seed, offset=seed)))
    assert requests.post(f"{a.url}/models/price/versions/1/promote", timeout=30).status_code == 200
    policy = {
        "variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
        "sticky": {"header": "X-Unit-Id"},
    }
    put = requests.put(f"{a.url}/models/price/aliases/production/policy", json=policy, timeout=60)
    assert put.status_code == 200, put.text
    units = [f"customer-{i}" for i in range(60)]
    wait_until(lambda: _version(b.url, "warm") in (1, 2), timeout=REFRESH + 2, what="B warm")
    time.sleep(REFRESH)  # both processes' workers hold the policy now
    on_a = [_version(a.url, u) for u in units]
    on_b = [_version(b.url, u) for u in units]
    assert on_a == on_b
    assert set(on_a) == {1, 2}

    # v2 archived through B: on A its units go to the control within the bound, and come
    # back to v2 once it is restored
    on_v2 = [u for u, v in zip(units, on_a, strict=True) if v == 2][:8]
    _set_status_and_follow(a, b, on_v2, "archived", answered_by=1)
    _set_status_and_follow(a, b, on_v2, "ready", answered_by=2)
    assert [_version(a.url, u) for u in units] == on_a

    # widen to v3 on B; A follows within the bound (every worker: ask several times)
    wider = {
        "variants": [{"version": 1, "weight": 0}, {"version": 3, "weight": 100}],
        "expected_revision": put.json()["revision"],
    }
    changed = requests.put(
        f"{b.url}/models/price/aliases/production/policy", json=wider, timeout=60
    )
    assert changed.status_code == 200, changed.text
    returned_at = time.monotonic()
    wait_until(
        lambda: all(_version(a.url) == 3 for _ in range(8)),
        timeout=REFRESH + 2,
        interval=0.02,
        what="A to follow the policy change",
    )
    elapsed = time.monotonic() - returned_at
    assert elapsed <= REFRESH + 0.35, f"A followed after {elapsed:.2f}s"

    stale = requests.put(
        f"{a.url}/models/price/aliases/production/policy",
        json={**policy, "expected_revision": put.json()["revision"]},
        timeout=60,
    )
    assert stale.status_code == 409
    time.sleep(REFRESH)
    seen = [_version(b.url) for _ in range(8)]
    assert seen == [3] * 8, seen  # nothing changed
