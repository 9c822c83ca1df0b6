"""Traffic policies on an alias through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from storage.local import key_for
from tests.conftest import fit_classifier, fit_linear, skops_bytes
from tests.helpers import problem, register

ROW = {"instances": [[0.1, 0.2, 0.3]]}


def _register(client, name="price", offset=0.0, model=None):
    model = model or fit_linear(offset=offset)
    response = register(
        client,
        name,
        skops_bytes(model),
        {"format": "skops", "input_example": [[0.1, 0.2, 0.3]]}
        if model is not None and getattr(model, "n_features_in_", 3) == 3
        else {"format": "skops"},
        "m.skops",
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["version"]


def _promote(client, name, version, alias="production"):
    response = client.post(f"/models/{name}/versions/{version}/promote", json={"alias": alias})
    assert response.status_code == 200, response.get_json()


@pytest.fixture
def three(client):
    """price v1 (production), v2 and v3, each with other predictions."""
    for offset in (0.0, 10.0, 20.0):
        _register(client, offset=offset)
    _promote(client, "price", 1)
    return client


def _put(client, body, name="price", alias="production"):
    return client.put(f"/models/{name}/aliases/{alias}/policy", json=body)


def _put_sticky_1_and_3(client):
    """A 50/50 policy of v1 and v3, sticky on X-Unit-Id."""
    body = {
        "variants": [{"version": 1, "weight": 50}, {"version": 3, "weight": 50}],
        "sticky": {"header": "X-Unit-Id"},
    }
    assert _put(client, body).status_code == 200


def _versions(client, n, headers_for=lambda i: {}, ref="production", name="price"):
    seen = []
    for i in range(n):
        response = client.post(f"/models/{name}/{ref}/predict", json=ROW, headers=headers_for(i))
        assert response.status_code == 200, response.get_json()
        assert response.headers["X-Model-Version"] == str(response.get_json()["version"])
        seen.append(response.get_json()["version"])
    return seen


def test_set_show_and_clear_a_policy_with_compare_and_set_and_events(three):
    body = {
        "variants": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}],
        "sticky": {"header": "X-Unit-Id"},
        "reason": "try v2",
        "expected_revision": 0,
    }
    response = _put(three, body)
    assert response.status_code == 200, response.get_json()
    policy = response.get_json()
    assert policy["revision"] == 1 and policy["state"] == "active" and policy["control"] == 1
    assert [(v["version"], v["share"], v["buckets"]) for v in policy["variants"]] == [
        (1, 0.9, 9000),
        (2, 0.1, 1000),
    ]
    assert policy["sticky"] == {"header": "x-unit-id"}
    assert three.get("/models/price/aliases/production/policy").get_json() == policy

    stale = _put(three, {**body, "expected_revision": 0})
    assert stale.status_code == 409
    assert "expected_revision" in problem(stale)["errors"]
    assert three.get("/models/price/aliases/production/policy").get_json() == policy

    cleared = three.delete(
        "/models/price/aliases/production/policy", json={"reason": "done", "expected_revision": 1}
    )
    assert cleared.status_code == 200
    assert cleared.get_json()["state"] == "none" and cleared.get_json()["revision"] == 2
    assert three.delete("/models/price/aliases/production/policy").status_code == 404
    events = three.get("/models/price/events").get_json()["events"]
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["policy_cleared", "policy_set"]
    set_event = events[1]
    assert set_event["reason"] == "try v2" and set_event["alias"] == "production"
    assert set_event["before"] == {"policy": None, "revision": 0}
    assert set_event["after"]["revision"] == 1
    assert set_event["after"]["policy"]["variants"][1] == {"version": 2, "weight": 10}
    assert set(set_event["after"]["check"]) == {"1", "2"}  # both versions were checked


def test_routing_follows_the_weights_and_sticky_units_stay(three):
    _put_sticky_1_and_3(three)
    first = _versions(three, 60, lambda i: {"X-Unit-Id": f"user-{i}"})
    again = _versions(three, 60, lambda i: {"X-Unit-Id": f"user-{i}"})
    assert first == again
    assert set(first) == {1, 3}
    # answers come from the version named: v3 predicts 20 more than v1
    a = three.post("/models/price/1/predict", json=ROW).get_json()["predictions"][0]
    b = three.post("/models/price/3/predict", json=ROW).get_json()["predictions"][0]
    assert b - a == pytest.approx(20.0, abs=1e-9)
    # a pinned version never goes through the policy
    assert set(_versions(three, 20, ref="1")) == {1}
    # without the header: random, by the weights
    assert set(_versions(three, 80)) == {1, 3}


def test_a_field_keyed_policy_reads_the_first_rows_field(client):
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame({"customer_id": [1.0, 2.0, 3.0, 4.0], "x": [0.0, 1.0, 2.0, 3.0]})
    for offset in (0.0, 5.0):
        model = LinearRegression().fit(frame, frame["x"] + offset)
        response = register(client, "rent", skops_bytes(model), {"format": "skops"}, "m.skops")
        assert response.status_code == 201, response.get_json()
    _promote(client, "rent", 1)
    assert (
        _put(
            client,
            {
                "variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}],
                "sticky": {"field": "customer_id"},
            },
            name="rent",
        ).status_code
        == 200
    )

    def ask(customer):
        body = {"instances": [{"customer_id": customer, "x": 1.0}]}
        response = client.post("/models/rent/production/predict", json=body)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["version"]

    answers = {c: ask(c) for c in range(40)}
    assert set(answers.values()) == {1, 2}
    assert all(ask(c) == v for c, v in answers.items())


def test_the_control_must_be_a_variant_and_versions_must_exist_and_load(three, app):
    missing_control = _put(three, {"variants": [{"version": 2, "weight": 1}]})
    assert missing_control.status_code == 422
    assert "variants" in problem(missing_control)["errors"]
    no_such = _put(three, {"variants": [{"version": 1, "weight": 1}, {"version": 9, "weight": 1}]})
    assert no_such.status_code == 422
    assert "variants[1].version" in problem(no_such)["errors"]
    no_alias = _put(three, {"variants": [{"version": 1, "weight": 1}]}, alias="staging")
    assert no_alias.status_code == 404

    # v4's stored bytes are damaged behind the server's back: it cannot load, so no policy
    _register(three, offset=30.0)
    record = three.get("/models/price/versions/4").get_json()
    blob = Path(app.extensions["modelreg"].store.root) / key_for(record["sha256"])
    blob.chmod(0o600)
    blob.write_bytes(b"\x00" * blob.stat().st_size)
    broken = _put(three, {"variants": [{"version": 1, "weight": 1}, {"version": 4, "weight": 1}]})
    assert broken.status_code == 422, broken.get_json()
    assert "variants[1].version" in problem(broken)["errors"]
    assert three.get("/models/price/aliases/production/policy").get_json()["state"] == "none"
    assert set(_versions(three, 10)) == {1}


def test_a_rollback_or_a_promotion_of_the_alias_ends_its_policy(three):
    _promote(three, "price", 2)
    body = {"variants": [{"version": 2, "weight": 1}, {"version": 3, "weight": 1}]}
    assert _put(three, body).status_code == 200
    rolled = three.post("/models/price/aliases/production/rollback", json={"reason": "bad"})
    assert rolled.status_code == 200
    policy = three.get("/models/price/aliases/production/policy").get_json()
    assert policy["state"] == "none" and policy["control"] == 1
    assert set(_versions(three, 20)) == {1}
    events = three.get("/models/price/events").get_json()["events"]
    ended = next(e for e in events if e["type"] == "policy_cleared")
    assert ended["after"]["cause"] == "rolled_back"

    assert (
        _put(
            three, {"variants": [{"version": 1, "weight": 1}, {"version": 3, "weight": 1}]}
        ).status_code
        == 200
    )
    _promote(three, "price", 3)
    assert three.get("/models/price/aliases/production/policy").get_json()["state"] == "none"
    assert set(_versions(three, 20)) == {3}


def test_stats_count_each_variant_and_shadows_compare_with_the_primary(three, app):
    body = {
        "variants": [{"version": 1, "weight": 70}, {"version": 2, "weight": 30}],
        "sticky": {"header": "X-Unit-Id"},
        "shadows": [{"version": 3, "sample": 1.0}],
    }
    assert _put(three, body).status_code == 200
    seen = _versions(three, 200, lambda i: {"X-Unit-Id": f"u{i}"})
    app.extensions["modelreg"].dataplane.shadows.join()
    stats = three.get("/models/price/aliases/production/policy/stats").get_json()
    by_version = {v["version"]: v for v in stats["variants"]}
    assert by_version[1]["requests"] == seen.count(1)
    assert by_version[2]["requests"] == seen.count(2)
    assert by_version[1]["errors"] == 0
    assert by_version[1]["latency_seconds"]["p50"] > 0
    assert by_version[2]["predictions"]["rows"] == seen.count(2)
    assert stats["sample_ratio"]["units"] == 200
    shadow = stats["shadows"][0]
    assert shadow["version"] == 3 and shadow["sampled"] == 200 and shadow["dropped"] == 0
    assert shadow["requests"] == 200
    # v3 predicts 20 above v1 and 10 above v2: every |delta| is 10 or 20
    assert 10.0 - 1e-6 <= shadow["abs_delta"]["p50"] <= 20.0 + 1e-6
    assert shadow["abs_delta"]["max"] == pytest.approx(20.0, abs=1e-6)
    metrics = three.get("/metrics").get_data(as_text=True)
    line = (
        'modelreg_policy_requests_total{alias="production",model="price",outcome="success",'
        'version="2"}'
    )
    assert f"{line} {float(seen.count(2))}" in metrics
    assert (
        'modelreg_policy_shadow_total{alias="production",model="price",outcome="compared",'
        'version="3"} 200.0' in metrics
    )
    # the answers stayed the primaries'
    answer = three.post("/models/price/production/predict", json=ROW, headers={"X-Unit-Id": "u0"})
    assert answer.get_json()["version"] == seen[0]


def test_a_classifier_shadow_reports_its_agreement(client, app):
    for seed in (0, 1):
        response = register(
            client, "kind", skops_bytes(fit_classifier(seed=seed)), {"format": "skops"}, "m.skops"
        )
        assert response.status_code == 201
    _promote(client, "kind", 1)
    assert (
        _put(
            client,
            {"variants": [{"version": 1, "weight": 1}], "shadows": [{"version": 2}]},
            name="kind",
        ).status_code
        == 200
    )
    rows = np.random.default_rng(0).random((50, 4)).tolist()
    for row in rows:
        assert (
            client.post("/models/kind/production/predict", json={"instances": [row]}).status_code
            == 200
        )
    app.extensions["modelreg"].dataplane.shadows.join()
    shadow = client.get("/models/kind/aliases/production/policy/stats").get_json()["shadows"][0]
    assert shadow["compared_rows"] == 50
    assert 0.0 <= shadow["agreement"] <= 1.0


def _shadow_process(app, **options):
    from serving.shadow_process import ShadowProcess

    services = app.extensions["modelreg"]
    dataplane = services.dataplane
    dataplane.shadows.stop()
    dataplane.shadows = ShadowProcess(
        services.config,
        dataplane.policy_stats,
        on_outcome=services.metrics.on_shadow_outcome,
        **options,
    )
    return dataplane.shadows


def _shadow_stats(client):
    return client.get("/models/price/aliases/production/policy/stats").get_json()["shadows"][0]


def test_a_shadow_process_that_falls_behind_drops_copies_and_counts_them(three, app):
    """The child stopped (SIGSTOP): its socket and the parent's buffer fill, the rest of the
    copies are dropped and counted, and the primaries are answered as before."""
    shadows = _shadow_process(app, buffer_bytes=2048, socket_buffer_bytes=4096)
    body = {"variants": [{"version": 1, "weight": 1}], "shadows": [{"version": 2}]}
    assert _put(three, body).status_code == 200
    assert set(_versions(three, 1)) == {1}
    assert shadows.join()
    child = shadows.child_pid()
    assert child is not None
    os.kill(child, signal.SIGSTOP)
    try:
        assert set(_versions(three, 300)) == {1}
        stopped = _shadow_stats(three)
    finally:
        os.kill(child, signal.SIGCONT)
    assert stopped["sampled"] + stopped["dropped"] == 301
    assert stopped["dropped"] >= 200
    assert shadows.dropped == stopped["dropped"]
    assert shadows.join()
    caught_up = _shadow_stats(three)
    assert caught_up["requests"] == caught_up["sampled"] == stopped["sampled"]
    assert caught_up["dropped"] == stopped["dropped"]
    metrics = three.get("/metrics").get_data(as_text=True)
    assert (
        'modelreg_policy_shadow_total{alias="production",model="price",outcome="dropped",'
        f'version="2"}} {float(stopped["dropped"])}' in metrics
    )


def test_a_killed_shadow_process_is_replaced_and_never_fails_a_primary(three, app):
    shadows = _shadow_process(app, restart_seconds=0.5)
    body = {"variants": [{"version": 1, "weight": 1}], "shadows": [{"version": 2}]}
    assert _put(three, body).status_code == 200
    assert set(_versions(three, 5)) == {1}
    assert shadows.join()
    first = shadows.child_pid()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while shadows.child_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert shadows.child_pid() is None  # noticed: copies are dropped during the pause
    assert set(_versions(three, 5)) == {1}
    time.sleep(0.6)
    assert set(_versions(three, 5)) == {1}
    assert shadows.join()
    second = shadows.child_pid()
    assert second is not None and second != first
    stats = _shadow_stats(three)
    assert stats["requests"] >= 10 and stats["dropped"] >= 5
    assert stats["requests"] + stats["dropped"] == 15


def test_policy_events_are_webhook_event_types():
    from registry.webhooks.events import FROM_AUDIT, KNOWN_EVENTS

    assert FROM_AUDIT["policy_set"] == "policy.set"
    assert FROM_AUDIT["policy_cleared"] == "policy.cleared"
    assert "policy.set" in KNOWN_EVENTS


def test_client_methods_set_show_stats_and_clear(sqlite_app):
    from registry.client import ApiError, Client

    api = Client.for_app(sqlite_app)
    for offset in (0.0, 1.0):
        api.register("price", fit_linear(offset=offset))
    api.promote("price", 1)
    policy = api.set_policy(
        "price", "production", {1: 80, 2: 20}, sticky={"header": "X-Unit-Id"}, reason="ab"
    )
    assert policy["revision"] == 1 and [v["version"] for v in policy["variants"]] == [1, 2]
    assert api.get_policy("price")["state"] == "active"
    versions = {
        api.predict("price", "production", [[0.1, 0.2, 0.3]], headers={"X-Unit-Id": f"u{i}"})[
            "version"
        ]
        for i in range(40)
    }
    assert versions == {1, 2}
    assert sum(v["requests"] for v in api.policy_stats("price")["variants"]) == 40
    with pytest.raises(ApiError) as stale:
        api.set_policy("price", "production", {1: 1}, expected_revision=0)
    assert stale.value.status == 409
    assert api.clear_policy("price", expected_revision=1)["state"] == "none"


def test_policy_commands(tmp_path, monkeypatch):
    import json

    import skops.io
    from click.testing import CliRunner

    from manage import cli

    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REQUIRE_INPUT_EXAMPLE_FOR", "")
    for name in ("DATABASE_URL", "STORAGE_URL", "INSTANCE_PATH", "MODELREG_URL"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    for offset in (0.0, 1.0, 2.0):
        path = tmp_path / f"m{offset}.skops"
        skops.io.dump(fit_linear(offset=offset), path)
        run("register", "price", str(path))
    run("promote", "price", "1")
    shown = json.loads(
        run(
            "policy",
            "set",
            "price",
            "production",
            "1=90",
            "2=10",
            "--sticky-header",
            "X-Unit-Id",
            "--shadow",
            "3=0.5",
            "--reason",
            "try v2",
        )
    )
    assert shown["revision"] == 1 and shown["shadows"] == [{"version": 3, "sample": 0.5}]
    assert json.loads(run("policy", "show", "price"))["state"] == "active"
    assert json.loads(run("policy", "stats", "price"))["variants"][0]["version"] == 1
    bad = runner.invoke(cli, ["policy", "set", "price", "production", "1:90"])
    assert bad.exit_code != 0 and "VERSION=WEIGHT" in bad.output
    stale = runner.invoke(cli, ["policy", "clear", "price", "--expected-revision", "7"])
    assert stale.exit_code != 0 and "revision" in stale.output
    assert json.loads(run("policy", "clear", "price"))["state"] == "none"


def test_a_variant_archived_or_deleted_after_the_policy_was_set_hands_its_share_to_control(
    three,
):
    _put_sticky_1_and_3(three)
    units = lambda i: {"X-Unit-Id": f"user-{i}"}  # noqa: E731
    before = _versions(three, 40, units)
    assert set(before) == {1, 3}
    assert _versions(three, 40, units) == before
    archived = three.patch("/models/price/versions/3", json={"status": "archived"})
    assert archived.status_code == 200, archived.get_json()
    assert set(_versions(three, 40, units)) == {1}  # v3's units go to the control
    restored = three.patch("/models/price/versions/3", json={"status": "ready"})
    assert restored.status_code == 200, restored.get_json()
    assert _versions(three, 40, units) == before  # and come back to v3
    deleted = three.delete("/models/price/versions/3")
    assert deleted.status_code == 204
    assert set(_versions(three, 40, units)) == {1}
