"""Many clients at once against a real threaded HTTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import random
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import fit_linear, joblib_bytes

WORKERS = 32


def _register(url: str, name: str, artifact: bytes) -> requests.Response:
    return requests.post(
        f"{url}/models/{name}/versions",
        files={
            "artifact": ("m.joblib", artifact),
            "metadata": (None, json.dumps({"format": "joblib"})),
        },
        timeout=120,
    )


def test_32_concurrent_registrations_of_a_new_model_get_1_to_32(live_server):
    artifacts = [joblib_bytes(fit_linear(seed=i)) for i in range(WORKERS)]
    with ThreadPoolExecutor(WORKERS) as pool:
        responses = list(pool.map(lambda a: _register(live_server.url, "race", a), artifacts))
    assert [r.status_code for r in responses] == [201] * WORKERS, [
        r.text for r in responses if r.status_code != 201
    ]
    versions = sorted(r.json()["version"] for r in responses)
    assert versions == list(range(1, WORKERS + 1))
    by_version = {r.json()["version"]: r.json()["sha256"] for r in responses}
    listed = requests.get(f"{live_server.url}/models/race/versions?limit=100", timeout=30).json()
    assert {v["version"]: v["sha256"] for v in listed["versions"]} == by_version
    events = requests.get(
        f"{live_server.url}/models/race/events?limit=100&type=register", timeout=30
    ).json()["events"]
    assert sorted(e["version"] for e in events) == versions
    created = requests.get(f"{live_server.url}/models/race/events?type=create", timeout=30)
    assert len(created.json()["events"]) == 1


def test_concurrent_promotions_leave_alias_and_history_consistent(live_server):
    artifact = joblib_bytes(fit_linear())
    for _ in range(6):
        assert _register(live_server.url, "promo", artifact).status_code == 201
    rng = random.Random(7)
    targets = [rng.randint(1, 6) for _ in range(24)]

    def promote(version: int) -> requests.Response:
        return requests.post(
            f"{live_server.url}/models/promo/versions/{version}/promote",
            json={"reason": f"to {version}"},
            timeout=120,
        )

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(promote, targets))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    events = requests.get(
        f"{live_server.url}/models/promo/events?type=promote&limit=100", timeout=30
    ).json()["events"]
    chain = list(reversed(events))  # oldest first
    assert chain[0]["before"]["version"] is None
    for earlier, later in itertools.pairwise(chain):
        assert later["before"]["version"] == earlier["after"]["version"]
        assert later["after"]["version"] != later["before"]["version"]
    model = requests.get(f"{live_server.url}/models/promo", timeout=30).json()
    assert model["aliases"]["production"] == chain[-1]["after"]["version"]
    # Rollback walks the same chain backwards.
    for expected in reversed(chain[1:]):
        moved = requests.post(
            f"{live_server.url}/models/promo/aliases/production/rollback", timeout=30
        )
        assert moved.status_code == 200
        assert moved.json()["version"] == expected["before"]["version"]
    final = requests.post(f"{live_server.url}/models/promo/aliases/production/rollback", timeout=30)
    assert final.status_code == 409
