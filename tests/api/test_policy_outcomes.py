"""The outcome comparison of a traffic policy's variants and the canary guardrails that read
the monitoring tables, on SQLite and PostgreSQL: requests routed by a real policy through the
data plane, logged, labelled over HTTP, and compared per variant."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from manage import CANARY_KEY
from tests.api.test_monitoring_api import FEATURES, T0, WINDOW, Clock, _data
from tests.conftest import joblib_bytes, make_config
from tests.helpers import problem


@pytest.fixture
def app(tmp_path, database_url):
    from manage import create_app

    config = make_config(
        tmp_path, database_url, MONITOR_WINDOW_SECONDS=WINDOW, MONITOR_PAYLOAD_SAMPLE=1.0
    )
    application = create_app(config)
    clock = Clock()
    monitoring = application.extensions["modelreg.monitoring"]
    monitoring.live._clock = clock
    monitoring.worker.clock = clock
    application.clock = clock
    yield application
    application.extensions["modelreg"].engine.dispose()


def _versions(client, *, worse_by: float = 1.3):
    """v1 fitted on the truth, v2 on prices scaled by `worse_by` (so its error is larger);
    v1 in production. A reference (without target) lets the monitor judge drift."""
    rng = np.random.default_rng(0)
    X, y = _data(rng, 500)
    reference = X.to_csv(index=False).encode()
    for model in (LinearRegression().fit(X, y), LinearRegression().fit(X, y * worse_by)):
        data = {
            "artifact": (io.BytesIO(joblib_bytes(model)), "m.joblib"),
            "metadata": json.dumps({"format": "joblib"}),
            "reference": (io.BytesIO(reference), "reference.csv"),
        }
        response = client.post(
            "/models/house/versions", data=data, content_type="multipart/form-data"
        )
        assert response.status_code == 201, response.get_data(as_text=True)
    assert client.post("/models/house/versions/1/promote", json={}).status_code == 200


def _policy(client, body):
    response = client.put("/models/house/aliases/production/policy", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def _serve_and_label(app, client, rng, requests, rows=5, shift=0.0):
    """Predict through the alias with request ids, flush, post every label; the rows each
    version answered (predictions and truths) for the offline check."""
    answered: dict[int, tuple[list[float], list[float]]] = {1: ([], []), 2: ([], [])}
    labels = []
    for _ in range(requests):
        X, y = _data(rng, rows, shift)
        request_id = f"r-{rng.integers(1 << 62)}"
        response = client.post(
            "/models/house/production/predict",
            json={"inputs": {c: X[c].tolist() for c in FEATURES}},
            headers={"X-Request-ID": request_id},
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        version = int(response.headers["X-Model-Version"])
        answered[version][0].extend(response.get_json()["predictions"])
        answered[version][1].extend(y.tolist())
        labels += [{"request_id": request_id, "row": r, "label": v} for r, v in enumerate(y)]
    app.extensions["modelreg.monitoring"].worker.flush()
    posted = client.post("/models/house/feedback", json={"labels": labels})
    assert posted.status_code == 200, posted.get_data(as_text=True)
    assert posted.get_json()["matched"] == len(labels)
    return answered


def _outcome(client):
    response = client.get("/models/house/aliases/production/policy/stats")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["outcome"]


def _rmse(predicted, truth):
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(truth)) ** 2)))


def test_the_policy_stats_compare_labelled_outcomes_per_variant(app, client):
    _versions(client)
    policy = _policy(
        client, {"variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}]}
    )
    assert policy["started_at"] is not None

    before = _outcome(client)
    assert before["loss"] is None and before["control"] == 1
    assert [v["labels"] for v in before["variants"]] == [0, 0]
    assert before["comparisons"][0]["verdict"] == "inconclusive"

    answered = _serve_and_label(app, client, np.random.default_rng(1), 80)
    outcome = _outcome(client)
    assert outcome["loss"] == "squared_error"
    by_version = {v["version"]: v for v in outcome["variants"]}
    for version in (1, 2):
        predicted, truth = answered[version]
        assert by_version[version]["labels"] == len(truth) > 30
        assert abs(by_version[version]["rmse"] - _rmse(predicted, truth)) <= 1e-6
    (comparison,) = outcome["comparisons"]
    assert comparison["candidate"] == 2 and comparison["verdict"] == "worse"
    assert comparison["labels"] == [len(answered[1][1]), len(answered[2][1])]
    assert comparison["p_value"] <= comparison["alpha"] == 0.05
    low, high = comparison["ci"]
    assert 0 < low <= comparison["difference"] <= high
    mse = {v: _rmse(*answered[v]) ** 2 for v in (1, 2)}
    assert comparison["difference"] == pytest.approx(mse[2] - mse[1], rel=1e-9)


def test_a_weight_change_keeps_the_experiment_a_new_variant_set_starts_one(client):
    _versions(client)
    first = _policy(
        client, {"variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}]}
    )
    reweighted = _policy(
        client, {"variants": [{"version": 1, "weight": 3}, {"version": 2, "weight": 1}]}
    )
    assert reweighted["started_at"] == first["started_at"]
    alone = _policy(client, {"variants": [{"version": 1, "weight": 1}]})
    assert alone["started_at"] > first["started_at"]


def _canary(client, **guardrails):
    return _policy(
        client,
        {
            "variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}],
            "canary": {
                "steps": [50, 100],
                "bake_seconds": 3600,
                "min_requests": 10**6,
                "guardrails": guardrails,
            },
        },
    )


def test_a_candidate_worse_on_labelled_outcomes_aborts_the_canary(app, client):
    _versions(client)
    _canary(client, max_metric_delta=0.0)
    controller = app.extensions[CANARY_KEY]
    assert controller.judge(lead=True) == [("house", "production", "hold")]  # no labels yet
    _serve_and_label(app, client, np.random.default_rng(2), 80)
    controller.flush()
    assert controller.judge(lead=True) == [("house", "production", "abort")]
    shown = client.get("/models/house/aliases/production/policy").get_json()
    assert shown["canary"]["state"] == "aborted"
    assert "squared_error" in shown["canary"]["reason"]
    assert [v["weight"] for v in shown["variants"]] == [100, 0]


def test_an_outcome_guardrail_with_room_holds_a_slightly_worse_candidate(app, client):
    _versions(client, worse_by=1.3)
    _canary(client, max_metric_delta=1e12)  # far more room than the candidate needs
    _serve_and_label(app, client, np.random.default_rng(3), 80)
    controller = app.extensions[CANARY_KEY]
    controller.flush()
    assert controller.judge(lead=True) == [("house", "production", "hold")]


def _drift_until_the_candidate_fires(app, client, controller) -> None:
    """Serve shifted rows through the canary (both versions see the drift), check that
    nothing is judged before the window closes, then close it: version 2's alert fires."""
    worker = app.extensions["modelreg.monitoring"].worker
    rng = np.random.default_rng(4)
    answered = {1: 0, 2: 0}
    # Every row shifted by 1.5 sigma, until each version has answered 400 rows (twice the
    # monitor's min_rows): the split is random, and ten requests could leave one short.
    for _ in range(200):
        X, _ = _data(rng, 100, shift=1.5)
        body = {"inputs": {c: X[c].tolist() for c in FEATURES}}
        answer = client.post("/models/house/production/predict", json=body)
        assert answer.status_code == 200
        answered[answer.get_json()["version"]] += 1
        if min(answered.values()) >= 4:
            break
    assert min(answered.values()) >= 4, answered
    worker.flush()
    controller.flush()
    assert controller.judge(lead=True) == [("house", "production", "hold")]  # not judged yet
    app.clock.now = T0 + WINDOW + 60  # the window closed, past the flush grace
    fired = worker.evaluate(lead=True)
    assert 2 in {t.version for t in fired if t.kind == "fired"}


def test_a_firing_monitor_alert_on_the_candidate_aborts_the_canary(app, client):
    _versions(client)
    assert client.put("/models/house/monitor", json={"fire_after": 1}).status_code == 200
    _canary(client, monitor_alerts="abort")
    controller = app.extensions[CANARY_KEY]
    _drift_until_the_candidate_fires(app, client, controller)
    assert controller.judge(lead=True) == [("house", "production", "abort")]
    reason = client.get("/models/house/aliases/production/policy").get_json()["canary"]["reason"]
    assert "monitor alert" in reason and "version 2" in reason


def test_a_firing_alert_is_ignored_by_default(app, client):
    _versions(client)
    assert client.put("/models/house/monitor", json={"fire_after": 1}).status_code == 200
    policy = _canary(client)
    assert policy["canary"]["guardrails"]["monitor_alerts"] == "ignore"
    assert policy["canary"]["guardrails"]["max_metric_delta"] is None
    controller = app.extensions[CANARY_KEY]
    _drift_until_the_candidate_fires(app, client, controller)
    assert controller.judge(lead=True) == [("house", "production", "hold")]


@pytest.mark.parametrize(
    ("guardrails", "field"),
    [
        ({"monitor_alerts": "rollback"}, "canary.guardrails.monitor_alerts"),
        ({"max_metric_delta": -1}, "canary.guardrails.max_metric_delta"),
        ({"max_metric_delta": "big"}, "canary.guardrails.max_metric_delta"),
    ],
)
def test_outcome_guardrails_are_validated(client, guardrails, field):
    _versions(client)
    body = {
        "variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}],
        "canary": {"steps": [50, 100], "guardrails": guardrails},
    }
    response = client.put("/models/house/aliases/production/policy", json=body)
    assert response.status_code == 422
    assert field in problem(response)["errors"]
    assert client.get("/models/house/aliases/production/policy").get_json()["state"] == "none"
