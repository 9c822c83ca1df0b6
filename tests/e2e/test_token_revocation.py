"""A withdrawn token stops working in every process within the alias refresh bound.

Two real servers on one database: A (one gunicorn worker) and B (two workers, keep-alive
connections, so that predictions are answered by the inline path and the fast path from the
token cache). The token cache itself is long (60 s): only the token epoch can make B notice.
A token revoked over HTTP on A, and one revoked by `modelreg tokens revoke` on the database
(which no server hears of), are refused by B within ALIAS_REFRESH_SECONDS; a token that
expires is refused from that moment. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
import requests

from tests.conftest import fit_linear, skops_bytes
from tests.e2e.servers import ServerProcess, modelreg_cli, start_servers

pytestmark = pytest.mark.slow

REFRESH = 1.0
CONNECTIONS = 4  # keep-alive connections to B, spread over its workers
BODY = {"instances": [[0.5, 0.5, 0.5]]}


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def env(request, tmp_path) -> dict[str, str]:
    if request.param == "sqlite":
        database = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        database = request.getfixturevalue("postgres_url")
    return {
        "DATABASE_URL": database,
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "false",
        "ALIAS_REFRESH_SECONDS": str(REFRESH),
        "AUTH_CACHE_SECONDS": "60",
    }


@pytest.fixture
def servers(tmp_path, env):
    assert "database at revision" in modelreg_cli("db", "upgrade", env=env)
    admin = modelreg_cli("tokens", "create", "--name", "ops", "--role", "admin", env=env).strip()
    started = start_servers(
        env, tmp_path, [{"workers": 1, "name": "a"}, {"workers": 2, "name": "b"}]
    )
    a, b = started
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {admin}"
    response = http.post(
        f"{a.url}/models/price/versions",
        files={
            "artifact": ("m.skops", skops_bytes(fit_linear())),
            "metadata": (None, json.dumps({"format": "skops"})),
        },
        timeout=60,
    )
    assert response.status_code == 201, response.text
    yield a, b, http
    http.close()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(ServerProcess.stop, started))


def _mint(a: ServerProcess, http: requests.Session, name: str, **body) -> dict:
    response = http.post(
        f"{a.url}/tokens", json={"name": name, "role": "reader", **body}, timeout=30
    )
    assert response.status_code == 201, response.text
    return response.json()


def _connections(secret: str) -> list[requests.Session]:
    sessions = []
    for _ in range(CONNECTIONS):
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {secret}"
        sessions.append(session)
    return sessions


def _predict(session: requests.Session, url: str) -> int:
    return session.post(f"{url}/models/price/1/predict", json=BODY, timeout=30).status_code


def _warm(sessions: list[requests.Session], url: str) -> set[int]:
    """Each connection's worker verifies the token and then answers from its cache; the
    worker processes that hold the connections."""
    for session in sessions:
        for _ in range(5):
            assert _predict(session, url) == 200
    return {session.get(f"{url}/serving/cache", timeout=30).json()["pid"] for session in sessions}


def _refused_everywhere(sessions: list[requests.Session], url: str, since: float) -> float:
    """Poll until every connection is refused; seconds from `since` (wall clock) to that
    moment. A connection once refused must stay refused."""
    refused = [False] * len(sessions)
    while not all(refused):
        assert time.time() - since < 10 * REFRESH, "still accepted after 10 s"
        for i, session in enumerate(sessions):
            status = _predict(session, url)
            assert status in (200, 401), status
            assert not (refused[i] and status == 200), "accepted again after a refusal"
            refused[i] = status == 401
        time.sleep(0.01)
    elapsed = time.time() - since
    for session in sessions:  # and it stays so
        assert _predict(session, url) == 401
    return elapsed


def test_revoked_and_expired_tokens_are_refused_by_every_process_in_time(servers):
    a, b, http = servers

    # Over HTTP on A: A refuses at once, B within the bound. Times are measured from the
    # revocation's own timestamp, taken just before it commits.
    secret = _mint(a, http, "svc-http")["token"]
    on_a, on_b = _connections(secret)[:1], _connections(secret)
    _warm(on_a, a.url)
    assert len(_warm(on_b, b.url)) == 2, "B's connections should be spread over both workers"
    revoked = http.delete(f"{a.url}/tokens/svc-http", timeout=30)
    assert revoked.status_code == 200
    assert _predict(on_a[0], a.url) == 401
    since = datetime.fromisoformat(revoked.json()["revoked_at"]).timestamp()
    elapsed = _refused_everywhere(on_b, b.url, since)
    print(f"revoked over HTTP on A: refused by B after {elapsed:.3f}s")
    assert elapsed <= REFRESH + 0.25, f"B refused the revoked token after {elapsed:.2f}s"

    # From the command line, on the database: no server hears of it.
    secret = _mint(a, http, "svc-cli")["token"]
    on_a, on_b = _connections(secret), _connections(secret)
    _warm(on_a, a.url)
    assert len(_warm(on_b, b.url)) == 2
    printed = modelreg_cli("tokens", "revoke", "svc-cli", env=b.env)
    since = datetime.fromisoformat(printed.strip().rsplit(" ", 1)[-1]).timestamp()
    with ThreadPoolExecutor(2) as pool:
        elapsed_a, elapsed_b = pool.map(
            _refused_everywhere, (on_a, on_b), (a.url, b.url), (since, since)
        )
    print(f"revoked by the CLI: refused by A after {elapsed_a:.3f}s, B after {elapsed_b:.3f}s")
    for process, elapsed in (("A", elapsed_a), ("B", elapsed_b)):
        assert elapsed <= REFRESH + 0.25, f"{process} refused it after {elapsed:.2f}s"

    # Every other token is still accepted, everywhere.
    for url in (a.url, b.url):
        assert http.post(f"{url}/models/price/1/predict", json=BODY, timeout=30).ok

    _an_expiring_token_is_refused_by_every_process_from_its_expiry(a, b, http)


def _an_expiring_token_is_refused_by_every_process_from_its_expiry(a, b, http) -> None:
    """Part of the test above, on the same two servers (they take a while to start)."""
    lifetime = 3.0
    created = _mint(a, http, "brief", expires_in_days=lifetime / 86400)
    expires_at = datetime.fromisoformat(created["expires_at"]).timestamp()
    sessions = _connections(created["token"])
    _warm(sessions[:1], a.url)
    _warm(sessions[1:], b.url)
    assert time.time() < expires_at - 1.0, "the token was about to expire before its use"

    # (sent, received, status) of every request, by the wall clock the server checks against
    answers: list[tuple[float, float, int]] = []
    targets = [(sessions[0], a.url)] + [(session, b.url) for session in sessions[1:]]
    while not answers or any(status != 401 for _, _, status in answers[-len(targets) :]):
        assert time.time() < expires_at + 5, "the expired token is still accepted"
        for session, url in targets:
            sent = time.time()
            status = _predict(session, url)
            answers.append((sent, time.time(), status))
            assert status in (200, 401), status
        time.sleep(0.01)
    accepted = [sent for sent, _, status in answers if status == 200]
    refused = [received for _, received, status in answers if status == 401]
    assert accepted and refused
    # Nothing sent after the expiry was accepted, and the first refusal came at once.
    assert max(accepted) < expires_at, "accepted after its expiry"
    late = min(refused) - expires_at
    print(f"expiring token: first refusal {late:+.3f}s after expires_at")
    assert late < 0.25, f"first refusal {late:.2f}s after the expiry"
