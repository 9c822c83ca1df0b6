"""Monitoring from the Python client (in-process) and the `modelreg monitor` commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LinearRegression

from registry.client import ApiError, Client


def _frame(rng, n):
    X = pd.DataFrame({"sqft": rng.normal(1500, 300, n), "age": rng.normal(30, 10, n)})
    return X, pd.Series(100 * X["sqft"] - 500 * X["age"] + rng.normal(0, 50, n), name="price")


@pytest.fixture
def api(sqlite_app):
    return Client.for_app(sqlite_app)


def test_register_with_reference_then_watch_label_and_monitor(api, sqlite_app):
    rng = np.random.default_rng(0)
    X, y = _frame(rng, 300)
    model = LinearRegression().fit(X, y)
    record = api.register("house", model, format="joblib", reference=X, reference_target=y)
    assert record["reference"]["profiled"] is True
    profile = api.profile("house", 1)
    assert profile["target"] == "price" and [f["name"] for f in profile["features"]] == [
        "sqft",
        "age",
    ]
    assert profile["prediction"]["metrics"]["rmse"] == pytest.approx(
        float(np.sqrt(np.mean((model.predict(X) - y) ** 2))), rel=1e-9
    )
    monitor = api.set_monitor("house", fire_after=3, payload_sample=1.0, reason="watch it")
    assert monitor["revision"] == 1 and monitor["payload_sample"] == 1.0
    with pytest.raises(ApiError) as refused:
        api.set_monitor("house", fire_after=1, expected_revision=0)
    assert refused.value.status == 409
    live = sqlite_app.extensions["modelreg.monitoring"]
    live.live.payload_rates["house"] = 1.0
    Xn, yn = _frame(rng, 5)
    answer = api.predict("house", 1, Xn, request_id="r-1")
    live.worker.flush()
    labels = [{"request_id": "r-1", "row": i, "label": v} for i, v in enumerate(yn.tolist())]
    assert api.feedback("house", labels) == {"accepted": 5, "matched": 5}
    report = api.monitoring("house", 1, since=0)
    (window,) = report["windows"]
    assert window["rows"] == 5
    offline = float(np.sqrt(np.mean((np.asarray(answer["predictions"]) - yn.to_numpy()) ** 2)))
    assert abs(window["metrics"]["rmse"] - offline) <= 1e-9
    replaced = api.set_reference("house", 1, X.head(50))
    assert replaced["rows"] == 50 and replaced["target"] is None


def test_monitor_commands(tmp_path, monkeypatch):
    from manage import cli

    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    for name in ("DATABASE_URL", "STORAGE_URL", "INSTANCE_PATH", "MODELREG_URL"):
        monkeypatch.delenv(name, raising=False)
    rng = np.random.default_rng(1)
    X, y = _frame(rng, 200)
    import skops.io

    path = tmp_path / "house.skops"
    skops.io.dump(LinearRegression().fit(X, y), path)
    reference = tmp_path / "reference.csv"
    X.assign(price=y).to_csv(reference, index=False)
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    run("register", "house", str(path))
    out = run("monitor", "reference", "house", "1", str(reference), "--target", "price")
    assert "profiled 200 rows" in out and "sqft" in out
    assert json.loads(run("monitor", "profile", "house", "1"))["target"] == "price"
    shown = json.loads(
        run("monitor", "set", "house", "--psi-alert", "0.3", "--on-alert", "rollback")
    )
    assert shown["thresholds"]["psi_alert"] == 0.3 and shown["on_alert"] == "rollback"
    assert json.loads(run("monitor", "show", "house"))["revision"] == 1
    out = run("monitor", "status", "house", "1")
    assert "house v1" in out
    bad = runner.invoke(cli, ["monitor", "set", "house", "--fire-after", "0"])
    assert bad.exit_code != 0 and "fire_after" in bad.output
