"""Progressive canaries: a failing candidate is aborted, a healthy one walks every step and
is promoted, and a step is never applied twice, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression

from manage import CANARY_KEY
from registry.policies import canary
from serving.canary import CanaryController
from tests.conftest import skops_bytes
from tests.helpers import register

RNG = np.random.default_rng(0)
X = RNG.random((60, 3))
Y = X.sum(axis=1)


def _models(client, *models):
    for model in models:
        response = register(
            client,
            "price",
            skops_bytes(model.fit(X, Y)),
            {"format": "skops", "input_example": [[0.1, 0.2, 0.3]]},
            "m.skops",
        )
        assert response.status_code == 201, response.get_json()
    promoted = client.post("/models/price/versions/1/promote", json={})
    assert promoted.status_code == 200, promoted.get_json()


def _canary(client, steps, *, min_requests=10, bake=0.1, **guardrails):
    body = {
        "variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}],
        "canary": {
            "steps": steps,
            "bake_seconds": bake,
            "min_requests": min_requests,
            "guardrails": guardrails,
        },
        "reason": "canary v2",
    }
    response = client.put("/models/price/aliases/production/policy", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _traffic(client, n, null_share=0.0):
    answered = []
    for i in range(n):
        row = [None if i < n * null_share else 0.4, 0.2, 0.3]
        response = client.post("/models/price/production/predict", json={"instances": [row]})
        answered.append((response.status_code, response.headers.get("X-Model-Version")))
    return answered


def _events(client):
    return client.get("/models/price/events?limit=100").get_json()["events"]


def test_a_candidate_failing_on_part_of_the_input_is_aborted(client, app):
    # the control accepts missing values, the candidate refuses them: every null row fails
    _models(client, HistGradientBoostingRegressor(max_iter=5), LinearRegression())
    policy = _canary(client, [10, 50, 100])
    assert policy["canary"]["state"] == "running" and policy["canary"]["share"] == 10
    assert [v["share"] for v in policy["variants"]] == [0.9, 0.1]
    controller: CanaryController = app.extensions[CANARY_KEY]
    _traffic(client, 600, null_share=0.3)
    controller.flush()
    assert controller.judge(lead=True) == [("price", "production", "abort")]

    shown = client.get("/models/price/aliases/production/policy").get_json()
    assert shown["canary"]["state"] == "aborted"
    assert "error rate" in shown["canary"]["reason"]
    assert [v["weight"] for v in shown["variants"]] == [100, 0]
    aborted = next(e for e in _events(client) if e["type"] == "canary_aborted")
    assert aborted["actor"] == "canary" and "error rate" in aborted["reason"]
    assert {version for _, version in _traffic(client, 50)} == {"1"}
    # an aborted canary is no longer judged
    controller.flush()
    assert controller.judge(lead=True) == []


def test_a_healthy_candidate_walks_every_step_and_is_promoted(client, app):
    _models(
        client, HistGradientBoostingRegressor(max_iter=5), HistGradientBoostingRegressor(max_iter=6)
    )
    _canary(client, [20, 60, 100])
    controller: CanaryController = app.extensions[CANARY_KEY]
    decisions = []
    for _ in range(20):
        _traffic(client, 80)
        time.sleep(0.12)  # the bake time
        controller.flush()
        decisions += [d for _, _, d in controller.judge(lead=True)]
        if "complete" in decisions:
            break
    # a round can hold (too few candidate requests yet); no step is skipped or repeated
    assert [d for d in decisions if d != "hold"] == ["advance", "advance", "complete"], decisions
    assert client.get("/models/price/aliases").get_json()["aliases"][0]["version"] == 2
    assert client.get("/models/price/aliases/production/policy").get_json()["state"] == "none"
    kinds = [e["type"] for e in reversed(_events(client))]
    trail = [
        k
        for k in kinds
        if k in {"policy_set", "canary_step", "promote", "policy_cleared", "canary_completed"}
    ]
    assert trail == [
        "promote",  # v1 to production, before the canary
        "policy_set",
        "canary_step",
        "canary_step",
        "policy_cleared",
        "promote",
        "canary_completed",
    ], trail
    steps = [e for e in reversed(_events(client)) if e["type"] == "canary_step"]
    assert [e["after"]["step"] for e in steps] == [1, 2]
    assert [e["after"]["variants"][1]["weight"] for e in steps] == [60, 100]
    assert {version for _, version in _traffic(client, 30)} == {"2"}


def test_a_step_judged_twice_is_applied_once_and_a_new_leader_goes_on(client, app):
    _models(
        client, HistGradientBoostingRegressor(max_iter=5), HistGradientBoostingRegressor(max_iter=6)
    )
    _canary(client, [10, 50, 100], min_requests=0)
    uow = app.extensions["modelreg"].uow
    with uow.session_factory() as session:
        (run,) = canary.running(session)
    time.sleep(0.12)
    # two leaders judged the same revision (one lost its lease mid-step): only one applies
    assert canary.advance(uow, run, now=time.time()) is True
    assert canary.advance(uow, run, now=time.time()) is False
    assert canary.abort(uow, run, "late judgement") is False
    steps = [e for e in _events(client) if e["type"] == "canary_step"]
    assert len(steps) == 1

    stats = app.extensions["modelreg"].dataplane.policy_stats
    first = CanaryController(uow, stats, lambda *a: None, tick_seconds=0.05, writer_id="a")
    second = CanaryController(uow, stats, lambda *a: None, tick_seconds=0.05, writer_id="b")
    assert first.judge() != [] or True  # takes the lease (and judges)
    assert second.judge() == []  # the lease is taken: b does nothing
    time.sleep(3 * 0.05 + 2 + 0.2)  # a "died": its lease expires
    time.sleep(0.12)
    assert second.judge() == [("price", "production", "advance")]
    shown = client.get("/models/price/aliases/production/policy").get_json()
    assert shown["canary"]["step"] == 2 and shown["canary"]["share"] == 100
    assert len([e for e in _events(client) if e["type"] == "canary_step"]) == 2


@pytest.mark.parametrize(
    ("guardrails", "expected"),
    [
        ({}, None),
        ({"max_mean_shift": 0.5}, "mean prediction"),
    ],
)
def test_a_prediction_shift_guardrail(guardrails, expected):
    control = {
        "requests": 100,
        "errors": 0,
        "latency": [0] * 61,
        "rows": 100,
        "total": 100.0,
        "squares": 101.0,
    }
    candidate = {
        "requests": 100,
        "errors": 0,
        "latency": [0] * 61,
        "rows": 100,
        "total": 200.0,
        "squares": 401.0,
    }
    control["latency"][5] = candidate["latency"][5] = 100
    reason = canary.breach({"guardrails": guardrails}, control, candidate)
    assert (reason is None) if expected is None else (expected in reason)


def test_a_slow_candidate_breaks_the_latency_guardrail():
    control = {
        "requests": 300,
        "errors": 0,
        "latency": [0] * 61,
        "rows": 0,
        "total": 0.0,
        "squares": 0.0,
    }
    candidate = dict(control, latency=[0] * 61)
    control["latency"][5] = 300
    candidate["latency"][15] = 300  # ~9x slower
    few = dict(candidate, requests=50)  # too few for a p99
    assert canary.breach({"guardrails": {"max_p99_ratio": 2}}, control, few) is None
    assert "p99 latency" in canary.breach({"guardrails": {"max_p99_ratio": 2}}, control, candidate)
    assert canary.breach({"guardrails": {"max_p99_ratio": 20}}, control, candidate) is None
