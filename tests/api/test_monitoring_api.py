"""Monitoring over HTTP on SQLite and PostgreSQL: references and profiles, live windows
through the real data plane, refused inputs, labels and live RMSE, monitors, alerts and the
rollback they may trigger. Windows and evaluation are driven by hand (a settable clock)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from tests.conftest import joblib_bytes, make_config
from tests.helpers import problem

FEATURES = ("sqft", "age", "rooms")
WINDOW = 60
T0 = 1_800_000_000 - 1_800_000_000 % WINDOW


class Clock:
    def __init__(self) -> None:
        self.now = float(T0 + 1)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app(tmp_path, database_url):
    from manage import create_app

    config = make_config(
        tmp_path,
        database_url,
        MONITOR_WINDOW_SECONDS=WINDOW,
        MONITOR_PAYLOAD_SAMPLE=0.0,
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
    )
    application = create_app(config)
    clock = Clock()
    monitoring = application.extensions["modelreg.monitoring"]
    monitoring.live._clock = clock
    monitoring.worker.clock = clock
    application.clock = clock
    yield application
    application.extensions["modelreg"].engine.dispose()


def _data(rng, n, shift=0.0):
    X = pd.DataFrame(
        {
            "sqft": rng.normal(1500, 300, n) + shift * 300,
            "age": rng.normal(30, 10, n),
            "rooms": rng.normal(5, 1, n),
        }
    )
    y = 100 * X["sqft"] - 500 * X["age"] + 2000 * X["rooms"] + rng.normal(0, 5000, n)
    return X, y


def _fit(seed=0):
    rng = np.random.default_rng(seed)
    X, y = _data(rng, 500)
    return LinearRegression().fit(X, y), X, y


def _csv(X, y=None) -> bytes:
    frame = X.copy()
    if y is not None:
        frame["price"] = y
    return frame.to_csv(index=False).encode()


def _register(client, name, model, reference: bytes | None = None, target=None):
    meta = {"format": "joblib", "metrics": {"rmse": 5000.0}}
    if target:
        meta["target"] = target
    data = {"artifact": (io.BytesIO(joblib_bytes(model)), "m.joblib"), "metadata": json.dumps(meta)}
    if reference is not None:
        data["reference"] = (io.BytesIO(reference), "reference.csv")
    return client.post(f"/models/{name}/versions", data=data, content_type="multipart/form-data")


def _predict(client, name, ref, X, request_id=None):
    headers = {"X-Request-ID": request_id} if request_id else {}
    body = {"inputs": {c: X[c].tolist() for c in FEATURES}}
    response = client.post(f"/models/{name}/{ref}/predict", json=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def _monitoring(app):
    return app.extensions["modelreg.monitoring"]


def test_registration_with_a_reference_profiles_inputs_predictions_and_metric(client):
    model, X, y = _fit()
    response = _register(client, "house", model, _csv(X, y), target="price")
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["reference"] == {"profiled": True, "rows": 500, "sampled": None}
    profile = client.get("/models/house/versions/1/profile").get_json()
    assert [f["name"] for f in profile["features"]] == list(FEATURES)
    sqft = profile["features"][0]
    assert sqft["type"] == "numeric" and sqft["missing_rate"] == 0.0
    assert sum(sqft["counts"]) == 500 and len(sqft["counts"]) == len(sqft["edges"]) + 1 == 10
    offline = float(np.sqrt(np.mean((model.predict(X) - y) ** 2)))
    assert profile["prediction"]["metrics"]["rmse"] == pytest.approx(offline, rel=1e-9)
    assert profile["prediction"]["registered_metrics"] == {"rmse": 5000.0}
    events = client.get("/models/house/events").get_json()["events"]
    assert events[0]["type"] == "reference_set"


def test_a_bad_reference_refuses_the_registration_and_stores_nothing(client):
    model, X, y = _fit()
    response = _register(client, "house", model, _csv(X, y), target="nope")
    assert response.status_code == 422
    assert "metadata.target" in problem(response)["errors"]
    assert client.get("/models/house").status_code == 404
    response = _register(client, "house", model, b"a,b\n1,2,3\n")
    assert response.status_code == 422
    assert client.get("/models/house").status_code == 404


def test_a_reference_sent_as_a_form_field_is_refused_not_ignored(client):
    model, X, _ = _fit()
    data = {
        "artifact": (io.BytesIO(joblib_bytes(model)), "m.joblib"),
        "metadata": json.dumps({"format": "joblib"}),
        "reference": _csv(X).decode(),  # no filename: a plain form field
    }
    response = client.post("/models/house/versions", data=data, content_type="multipart/form-data")
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert "file part" in problem(response)["errors"]["reference"]
    assert client.get("/models/house").status_code == 404


def test_reference_set_later_replaces_and_is_validated(client):
    model, X, _ = _fit()
    assert _register(client, "house", model).status_code == 201
    assert client.get("/models/house/versions/1/profile").status_code == 404
    rows = X.head(100).to_dict(orient="records")
    bad = client.put(
        "/models/house/versions/1/reference", data="[1, 2]", content_type="application/json"
    )
    assert bad.status_code == 422 and "reference" in problem(bad)["errors"]
    wrong = client.put("/models/house/versions/1/reference", data="x", content_type="text/plain")
    assert wrong.status_code == 415
    assert client.get("/models/house/versions/1/profile").status_code == 404
    ok = client.put("/models/house/versions/1/reference", json=rows)
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json()["rows"] == 100
    assert client.get("/models/house/versions/1/profile").get_json()["rows"] == 100


def test_predicted_rows_and_refused_inputs_reach_the_window(app, client):
    model, X, y = _fit()
    _register(client, "house", model, _csv(X, y), target="price")
    rng = np.random.default_rng(5)
    sent = 0
    for n in (1, 7, 250):
        _predict(client, "house", "1", _data(rng, n)[0])
        sent += n
    refused = client.post("/models/house/1/predict", json={"inputs": {"sqft": [1.0], "age": [2.0]}})
    assert refused.status_code == 422
    _monitoring(app).worker.flush()
    report = client.get(f"/models/house/versions/1/monitoring?since={T0}").get_json()
    (window,) = report["windows"]
    assert window["rows"] == sent and window["binned"] == sent
    assert window["features"]["sqft"]["rows"] == sent
    assert window["refused"] == {"inputs.rooms": 1}
    assert window["variant"] == ""
    assert window["judged"] is True and window["reasons"] == []


def test_live_rmse_equals_the_offline_rmse_on_the_same_rows(app, client):
    model, X, y = _fit()
    _register(client, "house", model, _csv(X, y), target="price")
    assert client.put("/models/house/monitor", json={"payload_sample": 1.0}).status_code == 200
    _monitoring(app).live.payload_rates["house"] = 1.0  # what the worker's refresh reads
    rng = np.random.default_rng(7)
    labels, truths, preds = [], [], []
    for i in range(12):
        Xi, yi = _data(rng, 9)
        answer = _predict(client, "house", "1", Xi, request_id=f"req-{i}")
        assert answer.headers["X-Request-ID"] == f"req-{i}"
        for row, label in enumerate(yi.tolist()):
            labels.append({"request_id": f"req-{i}", "row": row, "label": label})
        truths.extend(yi.tolist())
        preds.extend(model.predict(Xi).tolist())
    _monitoring(app).worker.flush()
    posted = client.post("/models/house/feedback", json={"labels": labels})
    assert posted.status_code == 200, posted.get_data(as_text=True)
    assert posted.get_json() == {"accepted": len(labels), "matched": len(labels)}
    report = client.get(f"/models/house/versions/1/monitoring?since={T0}").get_json()
    live = report["windows"][0]["metrics"]
    offline = float(np.sqrt(np.mean((np.asarray(preds) - np.asarray(truths)) ** 2)))
    assert live["labels"] == len(labels)
    assert abs(live["rmse"] - offline) <= 1e-9
    assert abs(live["mae"] - float(np.mean(np.abs(np.asarray(preds) - np.asarray(truths))))) <= 1e-9


def test_feedback_is_validated(client):
    model, _, _ = _fit()
    _register(client, "house", model)
    bad = client.post("/models/house/feedback", json={"labels": [{"row": 0, "label": 1}]})
    assert bad.status_code == 422 and "labels" in json.dumps(problem(bad)["errors"])
    twice = [{"request_id": "a", "row": 0, "label": 1}] * 2
    assert client.post("/models/house/feedback", json={"labels": twice}).status_code == 422
    assert client.post("/models/nope/feedback", json={"labels": twice[:1]}).status_code == 404


def test_monitor_defaults_validation_and_compare_and_set(client):
    model, _, _ = _fit()
    _register(client, "house", model)
    monitor = client.get("/models/house/monitor").get_json()
    assert monitor["defaults"] is True and monitor["revision"] == 0
    assert monitor["thresholds"]["psi_warn"] == 0.1 and monitor["thresholds"]["psi_alert"] == 0.25
    bad = client.put("/models/house/monitor", json={"fire_after": 0, "on_alert": "explode"})
    assert bad.status_code == 422
    assert set(problem(bad)["errors"]) == {"fire_after", "on_alert"}
    ok = client.put("/models/house/monitor", json={"fire_after": 3, "reason": "calmer"})
    assert ok.status_code == 200 and ok.get_json()["revision"] == 1
    stale = client.put("/models/house/monitor", json={"fire_after": 4, "expected_revision": 0})
    assert stale.status_code == 409
    assert client.get("/models/house/monitor").get_json()["fire_after"] == 3
    event = client.get("/models/house/events").get_json()["events"][0]
    assert event["type"] == "monitor_set" and event["reason"] == "calmer"


def test_a_monitor_change_is_judged_at_the_next_flush_not_the_next_period(app, client):
    import time

    model, _, _ = _fit()
    _register(client, "house", model)
    worker = _monitoring(app).worker
    judged = []
    real = worker.evaluate
    worker.evaluate = lambda **kw: judged.append(kw) or real(lead=True)
    try:
        worker._last_evaluate = time.monotonic()  # judged just now: the period has not run
        worker._last_flush = float("-inf")
        worker.tick()
        assert judged == []
        assert client.put("/models/house/monitor", json={"fire_after": 1}).status_code == 200
        worker._last_flush = float("-inf")  # the next flush is due
        worker.tick()
        assert len(judged) == 1
    finally:
        worker.evaluate = real


def _feed_window(app, client, name, ref, k, X):
    app.clock.now = T0 + k * WINDOW + 1
    _predict(client, name, ref, X)
    _monitoring(app).worker.flush()


def _evaluate(app, k):
    app.clock.now = T0 + (k + 1) * WINDOW + 60  # window k closed, past the flush grace
    return _monitoring(app).worker.evaluate(lead=True)


def test_a_drifting_version_fires_rolls_the_alias_back_once_and_resolves(app, client):
    model, X, y = _fit()
    _register(client, "house", model, _csv(X, y), target="price")
    _register(client, "house", _fit(seed=1)[0], _csv(X, y), target="price")
    for version in (1, 2):
        assert client.post(f"/models/house/versions/{version}/promote", json={}).status_code == 200
    hook = client.post(
        "/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["monitor.*"]}
    )
    assert hook.status_code == 201, hook.get_data(as_text=True)
    monitor = {"fire_after": 2, "resolve_after": 2, "on_alert": "rollback", "reason": "guard"}
    assert client.put("/models/house/monitor", json=monitor).status_code == 200
    rng = np.random.default_rng(11)
    fired = []
    for k in range(3):
        _feed_window(app, client, "house", "production", k, _data(rng, 400, shift=1.5)[0])
        fired += _evaluate(app, k)
    assert [(t.kind, t.version, t.rolled_back) for t in fired] == [("fired", 2, True)]
    assert client.get("/models/house").get_json()["aliases"]["production"] == 1
    events = client.get("/models/house/events").get_json()["events"]
    rollbacks = [e for e in events if e["type"] == "rollback"]
    assert len(rollbacks) == 1
    assert rollbacks[0]["actor"] == "monitor"
    assert fired[0].alert_id in rollbacks[0]["reason"] and "sqft" in rollbacks[0]["reason"]
    alert = next(e for e in events if e["type"] == "alert_fired")
    assert alert["version"] == 2 and alert["after"]["alert_id"] == fired[0].alert_id
    with app.extensions["modelreg"].uow() as work:
        from sqlalchemy import select

        from registry.models import WebhookDelivery

        queued = work.session.scalars(select(WebhookDelivery.event_type)).all()
    assert queued == ["monitor.alert_fired"]  # committed with the alert, in the outbox
    # v2 keeps drifting where it is still called by number: no second rollback of v1.
    for k in range(3, 5):
        _feed_window(app, client, "house", "2", k, _data(rng, 400, shift=1.5)[0])
        assert _evaluate(app, k) == []
    assert client.get("/models/house").get_json()["aliases"]["production"] == 1
    # Good windows resolve it.
    resolved = []
    for k in range(5, 7):
        _feed_window(app, client, "house", "2", k, _data(rng, 400)[0])
        resolved += _evaluate(app, k)
    assert [(t.kind, t.version) for t in resolved] == [("resolved", 2)]
    report = client.get(f"/models/house/versions/2/monitoring?since={T0}").get_json()
    assert report["alerts"][0]["state"] == "ok"
    # Window 2 went to version 1 (production after the rollback), not to version 2.
    assert [w["reasons"] != [] for w in report["windows"]] == [True] * 4 + [False] * 2
    v1 = client.get(f"/models/house/versions/1/monitoring?since={T0}").get_json()
    assert [w["start"] for w in v1["windows"]] == [report["windows"][1]["end"]]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'modelreg_monitor_alert_firing{model="house",version="2"} 0.0' in metrics


def test_alert_events_are_webhook_events(client):
    from registry.webhooks.events import FROM_AUDIT, RESERVED_EVENTS

    assert FROM_AUDIT["alert_fired"] == "monitor.alert_fired"
    assert FROM_AUDIT["alert_resolved"] == "monitor.alert_resolved"
    assert not [e for e in RESERVED_EVENTS if e.startswith("monitor.")]


def test_monitoring_query_is_validated(client):
    model, _, _ = _fit()
    _register(client, "house", model)
    bad = client.get("/models/house/versions/1/monitoring?since=yesterday")
    assert bad.status_code == 422 and "since" in problem(bad)["errors"]
    odd = client.get("/models/house/versions/1/monitoring?window=61")
    assert odd.status_code == 422 and "window" in problem(odd)["errors"]
    assert client.get("/models/house/versions/9/monitoring").status_code == 404


def test_a_reference_set_through_another_process_is_used_after_a_refresh(
    app, tmp_path, database_url
):
    from manage import create_app

    other = create_app(
        make_config(
            tmp_path, database_url, MONITOR_WINDOW_SECONDS=WINDOW, MONITOR_PAYLOAD_SAMPLE=0.0
        )
    )
    try:
        here, there = app.test_client(), other.test_client()
        model, X, _y = _fit()
        _register(here, "house", model)
        rng = np.random.default_rng(3)
        live = other.extensions["modelreg.monitoring"]
        live.live._clock = app.clock
        _predict(there, "house", "1", _data(rng, 200)[0])
        live.worker.flush()  # no profile yet: rows counted, nothing binned
        assert (
            here.put(
                "/models/house/versions/1/reference", data=_csv(X), content_type="text/csv"
            ).status_code
            == 200
        )
        live.worker.refresh()  # what its thread does at every flush
        _predict(there, "house", "1", _data(rng, 200)[0])
        live.worker.flush()
        (window,) = here.get(f"/models/house/versions/1/monitoring?since={T0}").get_json()[
            "windows"
        ]
        assert window["rows"] == 400 and window["binned"] == 200
    finally:
        other.extensions["modelreg"].engine.dispose()


def test_classifier_live_accuracy_and_log_loss_match_offline(app, client):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(8)
    X, y = _data(rng, 400)
    labels = np.where(y > np.median(y), "high", "low")
    model = LogisticRegression(max_iter=1000).fit(X, labels)
    _register(client, "kind", model, _csv(X))
    _monitoring(app).live.payload_rates["kind"] = 1.0
    posted, truth, probabilities, predicted = [], [], [], []
    for i in range(6):
        Xi, yi = _data(rng, 10)
        li = np.where(yi > np.median(y), "high", "low")
        method = "predict_proba" if i % 2 else "predict"
        body = {"inputs": {c: Xi[c].tolist() for c in FEATURES}, "method": method}
        answer = client.post("/models/kind/1/predict", json=body, headers={"X-Request-ID": f"k{i}"})
        assert answer.status_code == 200
        for row, label in enumerate(li.tolist()):
            posted.append({"request_id": f"k{i}", "row": row, "label": label})
        truth.extend(li.tolist())
        predicted.extend(model.predict(Xi).tolist())
        if method == "predict_proba":
            probabilities.append((li, model.predict_proba(Xi)))
    _monitoring(app).worker.flush()
    assert client.post("/models/kind/feedback", json={"labels": posted}).get_json()["matched"] == 60
    live = client.get(f"/models/kind/versions/1/monitoring?since={T0}").get_json()["windows"][0]
    metrics = live["metrics"]
    assert metrics["task"] == "classification" and metrics["labels"] == 60
    expected = float(np.mean(np.asarray(predicted) == np.asarray(truth)))
    assert abs(metrics["accuracy"] - expected) <= 1e-12
    y_true = np.concatenate([li for li, _ in probabilities])
    p = np.concatenate([pr for _, pr in probabilities])
    assert abs(metrics["log_loss"] - log_loss(y_true, p, labels=model.classes_)) <= 1e-9


def test_closed_windows_are_compacted_to_one_row_with_the_same_sums(app, client):
    from sqlalchemy import func, select

    from registry.monitoring.tables import MonitorSummary

    model, X, y = _fit()
    _register(client, "house", model, _csv(X, y), target="price")
    rng = np.random.default_rng(9)
    for _ in range(3):  # three flushes of window 0 (three rows, as from three processes)
        _feed_window(app, client, "house", "1", 0, _data(rng, 100)[0])
    _feed_window(app, client, "house", "1", 1, _data(rng, 100)[0])  # window 1 still open
    url = f"/models/house/versions/1/monitoring?since={T0}"
    before = client.get(url).get_json()["windows"]
    app.clock.now = T0 + WINDOW + 30  # window 0 closed and past the flush grace
    _monitoring(app).worker.evaluate(lead=True)
    with app.extensions["modelreg"].uow() as work:
        counts = dict(
            work.session.execute(
                select(MonitorSummary.window_start, func.count()).group_by(
                    MonitorSummary.window_start
                )
            ).all()
        )
    assert counts == {T0: 1, T0 + WINDOW: 1}
    after = client.get(url).get_json()["windows"]
    assert [w["rows"] for w in after] == [w["rows"] for w in before] == [300, 100]
    assert after[0]["features"] == before[0]["features"]
