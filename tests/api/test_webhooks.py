"""Webhooks against a real HTTP receiver on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from registry.db import utcnow
from tests.conftest import fit_linear, make_config, skops_bytes
from tests.e2e.servers import free_port
from tests.helpers import problem, register
from tests.webhook_receiver import Receiver

FAST_RETRIES = {
    "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "WEBHOOK_BACKOFF_BASE_SECONDS": 0.05,
    "WEBHOOK_BACKOFF_MAX_SECONDS": 0.2,
    "WEBHOOK_CONNECT_TIMEOUT": 1.0,
    "WEBHOOK_READ_TIMEOUT": 2.0,
}


def _app(tmp_path, database_url, **overrides):
    from manage import create_app

    return create_app(make_config(tmp_path, database_url, **{**FAST_RETRIES, **overrides}))


@pytest.fixture
def hook_app(tmp_path, database_url):
    application = _app(tmp_path, database_url)
    yield application
    application.extensions["modelreg"].engine.dispose()


@pytest.fixture
def hook_client(hook_app):
    return hook_app.test_client()


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def dispatcher(app):
    return app.extensions["modelreg"].webhooks


def subscribe(client, url, events=("*",), **extra):
    response = client.post("/webhooks", json={"url": url, "events": list(events), **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def register_linear(client, name="price", **metadata):
    response = register(
        client, name, skops_bytes(fit_linear()), {"format": "skops", **metadata}, "m.skops"
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def send_all(app, rounds=20):
    """Run the dispatcher until nothing is due (one delivery per subscription per round)."""
    sent = 0
    for _ in range(rounds):
        n = dispatcher(app).run_once()
        if n == 0:
            return sent
        sent += n
    return sent


def verify(secret, received):
    return Webhook(secret).verify(received.body, received.headers)


# ---- subscriptions ------------------------------------------------------------------------


def test_subscription_lifecycle_shows_the_secret_once(hook_client, receiver):
    created = subscribe(
        hook_client,
        receiver.url,
        ["version.*", "alias.promoted"],
        models=["price"],
        description="deploy bot",
    )
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["alias.promoted", "version.*"]
    assert created["models"] == ["price"] and created["enabled"] is True
    shown = hook_client.get(f"/webhooks/{created['id']}").get_json()
    listed = hook_client.get("/webhooks").get_json()
    assert "secret" not in shown and created["secret"] not in json.dumps(listed)
    assert "secret" not in listed["webhooks"][0]
    assert [w["id"] for w in listed["webhooks"]] == [created["id"]]

    disabled = hook_client.patch(f"/webhooks/{created['id']}", json={"enabled": False})
    assert disabled.status_code == 200 and disabled.get_json()["enabled"] is False
    assert hook_client.delete(f"/webhooks/{created['id']}").status_code == 204
    assert problem(hook_client.get(f"/webhooks/{created['id']}"))["status"] == 404


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::1]/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://203.0.113.9/hook", "must be https"),
        ("ftp://example.org/x", "http(s)"),
        ("https://user:pw@example.org/x", "credentials"),
        ("not a url", "http(s)"),
    ],
)
def test_targets_that_could_reach_inside_are_refused(client, url, reason):
    body = problem(client.post("/webhooks", json={"url": url, "events": ["*"]}))
    assert body["status"] == 422
    assert reason in body["errors"]["url"]


def test_unknown_events_are_refused_naming_the_field(hook_client, receiver):
    body = problem(hook_client.post("/webhooks", json={"url": receiver.url, "events": ["nope"]}))
    assert "unknown event 'nope'" in body["errors"]["events"]
    body = problem(hook_client.post("/webhooks", json={"url": receiver.url, "events": []}))
    assert "events" in body["errors"]
    body = problem(hook_client.post("/webhooks", json={"url": receiver.url}))
    assert "events" in body["errors"]


def test_only_admins_manage_webhooks(tmp_path, database_url, receiver):
    app = _app(tmp_path, database_url, AUTH_DISABLED=False)
    from registry import auth

    uow = app.extensions["modelreg"].uow
    publisher, _ = auth.create_token(uow, name="pub", role="operator", actor="t")
    admin, _ = auth.create_token(uow, name="adm", role="admin", actor="t")
    client = app.test_client()
    payload = {"url": receiver.url, "events": ["*"]}
    assert client.post("/webhooks", json=payload).status_code == 401
    refused = client.post(
        "/webhooks", json=payload, headers={"Authorization": f"Bearer {publisher}"}
    )
    assert refused.status_code == 403
    made = client.post("/webhooks", json=payload, headers={"Authorization": f"Bearer {admin}"})
    assert made.status_code == 201
    assert (
        client.get("/webhooks", headers={"Authorization": f"Bearer {publisher}"}).status_code == 403
    )
    app.extensions["modelreg"].engine.dispose()


# ---- delivery -----------------------------------------------------------------------------


def test_a_registration_is_delivered_signed_per_standard_webhooks(hook_app, hook_client, receiver):
    hook = subscribe(hook_client, receiver.url)
    register_linear(hook_client)
    assert send_all(hook_app) == 2  # model.created, version.registered
    first, second = receiver.wait_for(2)
    payloads = [verify(hook["secret"], r) for r in (first, second)]
    assert [p["type"] for p in payloads] == ["model.created", "version.registered"]
    registered = payloads[1]
    assert registered["data"]["model"] == "price" and registered["data"]["version"] == 1
    assert registered["data"]["event_id"] >= 1 and registered["data"]["after"]["sha256"]
    assert second.headers["webhook-id"] != first.headers["webhook-id"]
    assert second.path == "/hook"

    tampered = dict(second.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(second.body.replace(b'"price"', b'"other"'), tampered)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(second.body, second.headers)

    delivered = hook_client.get(f"/webhooks/{hook['id']}/deliveries").get_json()["deliveries"]
    assert [d["status"] for d in delivered] == ["delivered", "delivered"]
    assert delivered[0]["last_status_code"] == 200 and delivered[0]["attempts"] == 1


def test_promotion_and_rollback_events_carry_the_alias(hook_app, hook_client, receiver):
    hook = subscribe(hook_client, receiver.url, ["alias.*"])
    register_linear(hook_client, input_example=[[0.1, 0.2, 0.3]])
    register_linear(hook_client, input_example=[[0.1, 0.2, 0.3]])
    for version in (1, 2):
        promoted = hook_client.post(
            f"/models/price/versions/{version}/promote",
            json={"alias": "production", "reason": f"v{version}"},
        )
        assert promoted.status_code == 200, promoted.get_json()
    assert (
        hook_client.post(
            "/models/price/aliases/production/rollback", json={"reason": "latency"}
        ).status_code
        == 200
    )
    send_all(hook_app)
    payloads = [verify(hook["secret"], r) for r in receiver.wait_for(3)]
    assert [p["type"] for p in payloads] == [
        "alias.promoted",
        "alias.promoted",
        "alias.rolled_back",
    ]
    assert [p["data"]["alias"] for p in payloads] == ["production"] * 3
    assert payloads[1]["data"]["version"] == 2 and payloads[1]["data"]["reason"] == "v2"
    assert payloads[2]["data"]["reason"] == "latency"


def test_a_failed_registration_or_refused_promotion_sends_nothing(hook_app, hook_client, receiver):
    hook = subscribe(hook_client, receiver.url)
    register_linear(hook_client, input_example=[[0.1, 0.2, 0.3]])
    send_all(hook_app)
    receiver.wait_for(2)
    before = len(receiver.received)

    bad = register(hook_client, "price", b"not a model", {"format": "skops"}, "m.skops")
    assert bad.status_code == 422
    wrong_width = hook_client.patch("/models/price/versions/1", json={"description": "x"})
    assert wrong_width.status_code == 200  # an edit is an event (checked below)
    refused = hook_client.post("/models/price/versions/9/promote", json={"alias": "production"})
    assert refused.status_code == 404
    conflict = hook_client.post(
        "/models/price/versions/1/promote", json={"alias": "production", "expected_version": 7}
    )
    assert conflict.status_code == 409
    send_all(hook_app)
    time.sleep(0.2)
    types = [json.loads(r.body)["type"] for r in receiver.received[before:]]
    assert types == ["version.updated"]
    deliveries = hook_client.get(f"/webhooks/{hook['id']}/deliveries").get_json()["deliveries"]
    assert len(deliveries) == 3


def test_subscriptions_limited_to_models_and_token_events_opt_in(hook_app, hook_client, receiver):
    other = Receiver().start()
    try:
        subscribe(hook_client, receiver.url, ["*"], models=["price"])
        tokens = subscribe(hook_client, other.url, ["token.*"])
        register_linear(hook_client, "price")
        register_linear(hook_client, "churn")
        created = hook_client.post("/tokens", json={"name": "svc", "role": "reader"})
        assert created.status_code == 201
        assert hook_client.delete("/tokens/svc").status_code == 200
        send_all(hook_app)
        models = {json.loads(r.body)["data"]["model"] for r in receiver.wait_for(2)}
        assert models == {"price"}
        token_payloads = [verify(tokens["secret"], r) for r in other.wait_for(2)]
        assert [p["type"] for p in token_payloads] == ["token.created", "token.revoked"]
        assert token_payloads[0]["data"]["token"] == "svc"
        secret = created.get_json()["token"]
        assert all(secret not in r.body.decode() for r in other.received)
        assert len(receiver.received) == 2  # no token events under "*"
    finally:
        other.stop()


def test_disabled_subscription_gets_nothing_new(hook_app, hook_client, receiver):
    hook = subscribe(hook_client, receiver.url)
    hook_client.patch(f"/webhooks/{hook['id']}", json={"enabled": False})
    register_linear(hook_client)
    assert send_all(hook_app) == 0
    assert hook_client.get(f"/webhooks/{hook['id']}/deliveries").get_json()["deliveries"] == []


def test_receiver_down_then_up_is_delivered_after_backoff(hook_app, hook_client, monkeypatch):
    port = free_port()
    hook = subscribe(hook_client, f"http://127.0.0.1:{port}/hook", ["version.registered"])
    register_linear(hook_client)
    # The dispatcher's clock stands still while the first attempt and the backing-off check
    # run, so that check does not depend on how fast this machine gets from one to the other.
    frozen = utcnow()
    monkeypatch.setattr(dispatcher(hook_app), "_clock", lambda: frozen)
    assert dispatcher(hook_app).run_once() == 1
    (pending,) = hook_client.get(f"/webhooks/{hook['id']}/deliveries").get_json()["deliveries"]
    assert pending["status"] == "pending" and pending["attempts"] == 1
    assert pending["last_status_code"] is None and "Connection" in pending["last_error"]
    assert dispatcher(hook_app).run_once() == 0  # backing off
    monkeypatch.setattr(dispatcher(hook_app), "_clock", utcnow)

    receiver = Receiver().start(port)
    try:
        deadline = time.monotonic() + 5
        while not receiver.received and time.monotonic() < deadline:
            dispatcher(hook_app).run_once()
            time.sleep(0.05)
        (received,) = receiver.wait_for(1)
        assert verify(hook["secret"], received)["type"] == "version.registered"
        detail = hook_client.get(f"/webhooks/{hook['id']}/deliveries/{pending['id']}").get_json()
        assert detail["status"] == "delivered" and detail["attempts"] == 2
        assert [a["status_code"] for a in detail["attempt_log"]] == [None, 200]
        assert received.headers["webhook-id"] == detail["message_id"]
    finally:
        receiver.stop()


def test_failing_forever_is_marked_failed_then_retried_by_hand(tmp_path, database_url):
    app = _app(tmp_path, database_url, WEBHOOK_RETRY_SECONDS=0.4, WEBHOOK_ATTEMPTS_KEPT=3)
    client = app.test_client()
    receiver = Receiver(status=500).start()
    try:
        hook = subscribe(client, receiver.url, ["version.registered"])
        register_linear(client)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            dispatcher(app).run_once()
            failed = client.get(f"/webhooks/{hook['id']}/deliveries?status=failed").get_json()
            if failed["deliveries"]:
                break
            time.sleep(0.05)
        (failed_delivery,) = failed["deliveries"]
        assert failed_delivery["last_status_code"] == 500
        assert failed_delivery["last_error"] == "HTTP 500"
        assert failed_delivery["attempts"] >= 2
        detail = client.get(f"/webhooks/{hook['id']}/deliveries/{failed_delivery['id']}")
        log = detail.get_json()["attempt_log"]
        assert 1 <= len(log) <= 3 and all(a["status_code"] == 500 for a in log)
        assert dispatcher(app).run_once() == 0  # failed for good

        receiver.status = 200
        retried = client.post(f"/webhooks/{hook['id']}/deliveries/{failed_delivery['id']}/retry")
        assert retried.status_code == 202 and retried.get_json()["status"] == "pending"
        assert dispatcher(app).run_once() == 1
        ids = receiver.message_ids()
        assert ids[-1] == failed_delivery["message_id"] and len(set(ids)) == 1
        done = client.get(f"/webhooks/{hook['id']}/deliveries/{failed_delivery['id']}")
        assert done.get_json()["status"] == "delivered"
    finally:
        receiver.stop()
        app.extensions["modelreg"].engine.dispose()


def test_a_redirect_is_not_followed(hook_app, hook_client):
    target = Receiver().start()
    redirector = Receiver(status=307).start()
    try:
        subscribe(hook_client, redirector.url, ["version.registered"])
        register_linear(hook_client)
        dispatcher(hook_app).run_once()
        redirector.wait_for(1)
        assert target.received == []
    finally:
        target.stop()
        redirector.stop()


def test_events_reach_a_subscription_in_order(hook_app, hook_client, receiver):
    subscribe(hook_client, receiver.url, ["version.*"])
    register_linear(hook_client)
    for n in range(5):
        edited = hook_client.patch("/models/price/versions/1", json={"description": f"d{n}"})
        assert edited.status_code == 200
    send_all(hook_app)
    payloads = [json.loads(r.body) for r in receiver.wait_for(6)]
    assert [p["data"]["after"].get("description") for p in payloads[1:]] == [
        f"d{n}" for n in range(5)
    ]
    assert [p["data"]["event_id"] for p in payloads] == sorted(
        p["data"]["event_id"] for p in payloads
    )


def test_rotated_secret_signs_with_both_during_the_grace_period(hook_app, hook_client, receiver):
    hook = subscribe(hook_client, receiver.url, ["version.registered"])
    rotated = hook_client.post(f"/webhooks/{hook['id']}/rotate-secret").get_json()
    assert rotated["secret"] != hook["secret"] and rotated["secret_rotated_until"]
    register_linear(hook_client)
    dispatcher(hook_app).run_once()
    (received,) = receiver.wait_for(1)
    assert received.headers["webhook-signature"].count("v1,") == 2
    assert verify(rotated["secret"], received) == verify(hook["secret"], received)


def test_the_test_endpoint_sends_a_ping_now(hook_client, receiver):
    hook = subscribe(hook_client, receiver.url, ["alias.promoted"])
    answer = hook_client.post(f"/webhooks/{hook['id']}/test")
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["status"] == "delivered" and body["event_type"] == "webhook.test"
    assert body["attempt_log"][0]["status_code"] == 200
    (received,) = receiver.wait_for(1)
    assert verify(hook["secret"], received)["type"] == "webhook.test"


def test_background_dispatcher_delivers_within_a_second_and_counts(tmp_path, database_url):
    app = _app(tmp_path, database_url, WEBHOOK_DISPATCH=True, WEBHOOK_POLL_SECONDS=0.1)
    receiver = Receiver().start()
    try:
        client = app.test_client()
        subscribe(client, receiver.url, ["version.registered"])
        started = time.monotonic()
        register_linear(client)
        receiver.wait_for(1, timeout=5)
        assert time.monotonic() - started < 3
        delivered = 'modelreg_webhook_deliveries_total{outcome="delivered"} 1.0'
        deadline = time.monotonic() + 5  # the outcome is recorded after the receiver answers
        while delivered not in (metrics := client.get("/metrics").get_data(as_text=True)):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
        assert "modelreg_webhook_queue_depth" in metrics
    finally:
        dispatcher(app).stop()
        receiver.stop()
        app.extensions["modelreg"].engine.dispose()


# ---- the command line and the client --------------------------------------------------------


def test_cli_and_client_drive_a_server(hook_app, receiver, monkeypatch):
    from click.testing import CliRunner

    from manage import cli
    from registry.client import Client
    from tests.conftest import LiveServer

    server = LiveServer(hook_app)
    try:
        runner = CliRunner()

        def run(*args):
            result = runner.invoke(cli, [*args, "--url", server.url], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            return result.stdout

        created = json.loads(
            run("webhooks", "create", receiver.url, "--event", "version.*", "--json")
        )
        assert created["secret"].startswith("whsec_")
        hook_id = str(created["id"])
        assert receiver.url in run("webhooks", "list")
        assert "delivered (200" in run("webhooks", "test", hook_id)
        assert "disabled" in run("webhooks", "disable", hook_id)
        assert json.loads(run("webhooks", "show", hook_id))["enabled"] is False
        run("webhooks", "enable", hook_id)
        deliveries = json.loads(run("webhooks", "deliveries", hook_id, "--json"))
        assert [d["event_type"] for d in deliveries] == ["webhook.test"]
        assert "queued again" in run("webhooks", "retry", hook_id, str(deliveries[0]["id"]))
        assert "new signing secret" in run("webhooks", "rotate-secret", hook_id)

        client = Client(server.url, token=None)
        assert [w["id"] for w in client.list_webhooks()] == [created["id"]]
        second = client.create_webhook(receiver.url, ["alias.*"], models=["price"])
        assert client.get_webhook(second["id"])["models"] == ["price"]
        assert client.update_webhook(second["id"], description="ops")["description"] == "ops"
        tested = client.test_webhook(second["id"])
        assert client.webhook_delivery(second["id"], tested["id"])["status"] == "delivered"
        assert client.webhook_deliveries(second["id"], status="delivered")[0]["id"] == tested["id"]
        client.delete_webhook(second["id"])
        run("webhooks", "delete", hook_id, "--yes")
        assert client.list_webhooks() == []
    finally:
        server.stop()


def test_a_dead_dispatchers_lease_runs_out_and_another_sends_it(hook_app, hook_client, receiver):
    from datetime import timedelta

    from registry.db import utcnow
    from registry.webhooks.dispatcher import Dispatcher

    subscribe(hook_client, receiver.url, ["version.registered"])
    register_linear(hook_client)
    crashed = dispatcher(hook_app)
    (job,) = crashed.claim(4)  # leased, never sent: the process "died" here
    settings = crashed.settings
    sessions = hook_app.extensions["modelreg"].uow.session_factory
    now = utcnow()
    during = Dispatcher(sessions, settings, crashed.policy, clock=lambda: now)
    assert during.claim(4) == []  # still leased
    after = Dispatcher(
        sessions,
        settings,
        crashed.policy,
        clock=lambda: now + settings.lease + timedelta(seconds=1),
    )
    (again,) = after.claim(4)
    assert again.delivery_id == job.delivery_id
    after.send(again)
    (received,) = receiver.wait_for(1)
    assert received.headers["webhook-id"] == f"msg_{job.delivery_id}"
