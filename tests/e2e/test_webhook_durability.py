"""Webhooks across crashes and processes: real servers, a real receiver, real databases."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from tests.conftest import fit_linear, skops_bytes
from tests.e2e.servers import ServerProcess, free_port, wait_until
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow

FAST = {
    "AUTH_DISABLED": "true",
    "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "WEBHOOK_POLL_SECONDS": "0.1",
    "WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
    "WEBHOOK_BACKOFF_MAX_SECONDS": "0.5",
    "WEBHOOK_CONNECT_TIMEOUT": "1",
}


def _env(folder: Path, **extra: str) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    return {
        "DATABASE_URL": f"sqlite:///{folder / 'r.db'}",
        "STORAGE_URL": (folder / "artifacts").as_uri(),
        "INSTANCE_PATH": str(folder / "instance"),
        **FAST,
        **extra,
    }


def _register(url: str, name: str = "price") -> dict:
    answer = requests.post(
        f"{url}/models/{name}/versions",
        files={"artifact": ("m.skops", io.BytesIO(skops_bytes(fit_linear())))},
        data={"metadata": json.dumps({"format": "skops"})},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def _subscribe(url: str, target: str, events: list[str]) -> dict:
    answer = requests.post(f"{url}/webhooks", json={"url": target, "events": events}, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _deliveries(url: str, hook_id: int) -> list[dict]:
    answer = requests.get(f"{url}/webhooks/{hook_id}/deliveries?limit=500", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["deliveries"]


def test_a_committed_change_is_delivered_after_a_kill_9_exactly_once_per_id(tmp_path):
    port = free_port()  # the receiver's, not listening yet: the first attempts fail
    env = _env(tmp_path / "server")
    server = ServerProcess(env, tmp_path, name="before-crash")
    try:
        hook = _subscribe(server.url, f"http://127.0.0.1:{port}/hook", ["*"])
        _register(server.url)
        wait_until(
            lambda: all(d["attempts"] >= 1 for d in _deliveries(server.url, hook["id"])),
            timeout=20,
            what="the first (failing) attempts",
        )
        pending = _deliveries(server.url, hook["id"])
        assert [d["event_type"] for d in pending] == ["version.registered", "model.created"]
        assert all(d["status"] == "pending" for d in pending)
    finally:
        server.kill()

    receiver = Receiver().start(port)
    restarted = ServerProcess(env, tmp_path, name="after-crash")
    try:
        received = receiver.wait_for(2, timeout=30)
        wait_until(
            lambda: all(d["status"] == "delivered" for d in _deliveries(restarted.url, hook["id"])),
            timeout=20,
            what="the deliveries to be recorded",
        )
        by_id = {r.headers["webhook-id"]: r for r in received}
        assert len(by_id) == 2  # deduped by webhook-id: each event once
        types = sorted(
            Webhook(hook["secret"]).verify(r.body, r.headers)["type"] for r in by_id.values()
        )
        assert types == ["model.created", "version.registered"]
    finally:
        restarted.stop()
        receiver.stop()


def test_two_servers_on_postgresql_send_each_of_200_deliveries_once(tmp_path, postgres_url):
    receiver = Receiver(delay=0.002).start()
    shared = {
        "DATABASE_URL": postgres_url,
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "WEBHOOK_POLL_SECONDS": "0.05",
    }
    first = second = None
    try:
        first = ServerProcess(_env(tmp_path / "a", **shared), tmp_path, name="a")
        second = ServerProcess(_env(tmp_path / "b", **shared), tmp_path, name="b")
        hook = _subscribe(first.url, receiver.url, ["version.*", "model.*"])
        _register(first.url)
        servers = [first.url, second.url]
        session = requests.Session()
        for n in range(198):
            answer = session.patch(
                f"{servers[n % 2]}/models/price/versions/1",
                json={"description": f"edit {n}"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
        expected = 200  # model.created, version.registered, 198 edits
        receiver.wait_for(expected, timeout=120)
        wait_until(
            lambda: (
                sum(d["status"] == "delivered" for d in _deliveries(first.url, hook["id"]))
                == expected
            ),
            timeout=30,
            what="every delivery to be recorded",
        )
        ids = receiver.message_ids()
        assert len(ids) == len(set(ids)) == expected  # no duplicates from racing dispatchers
        edits = [
            json.loads(r.body)["data"]["after"].get("description")
            for r in receiver.received
            if json.loads(r.body)["type"] == "version.updated"
        ]
        assert edits == [f"edit {n}" for n in range(198)]  # in order, one in flight at a time
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()
        receiver.stop()
