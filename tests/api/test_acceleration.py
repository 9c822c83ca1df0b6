"""ONNX acceleration: converted at registration, verified against scikit-learn, used only when
it agrees; every other outcome serves with scikit-learn and says why."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeRegressor

import serving.accelerate as accelerate_module
import serving.trees as trees_module
from registry.services.storage_gc import collect_garbage
from tests.conftest import make_config, skops_bytes
from tests.helpers import assert_linear_agreement, register

RNG = np.random.default_rng(3)
X = RNG.normal(size=(120, 6))
Y_REG = X @ np.array([3.0, -2.0, 0.5, 0.0, 1.0, 4.0]) + 10
Y_CLS = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
PROBE = RNG.normal(size=(25, 6))

REGRESSORS = {  # served through their ONNX conversion
    "ridge-pipeline": make_pipeline(StandardScaler(), Ridge()),
    "tree": DecisionTreeRegressor(max_depth=5, random_state=0),
    "forest": RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0),
    "boosting": GradientBoostingRegressor(n_estimators=20, random_state=0),
}
CLASSIFIERS = {
    "logistic-pipeline": make_pipeline(MinMaxScaler(), LogisticRegression()),
    "forest-classifier": RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0),
    "boosting-classifier": GradientBoostingClassifier(n_estimators=15, random_state=0),
}


@pytest.fixture
def client(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path, ACCELERATE="auto"))
    yield app.test_client()
    app.extensions["modelreg"].engine.dispose()


def _register(client, name, model, **metadata):
    response = register(
        client,
        name,
        skops_bytes(model),
        {"format": "skops", "input_example": X[:3].tolist(), **metadata},
        filename="m.skops",
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _predict(client, name, rows, method="predict"):
    response = client.post(
        f"/models/{name}/1/predict", json={"instances": rows.tolist(), "method": method}
    )
    assert response.status_code == 200, response.get_json()
    return response


@pytest.mark.parametrize("name", list(REGRESSORS))
def test_regressors_are_accelerated_and_agree(client, name):
    model = REGRESSORS[name].fit(X, Y_REG)
    record = _register(client, name, model)
    accel = record["acceleration"]
    assert accel["status"] == "ready", accel
    assert accel["runtime"] == "onnxruntime" and len(accel["sha256"]) == 64
    assert accel["rows_checked"] >= 300
    assert accel["max_abs_diff"] <= accel["tolerance"]["atol"] + accel["tolerance"]["rtol"] * 100
    assert "skl2onnx" in accel["converter"]
    response = _predict(client, name, PROBE)
    assert response.headers["X-Model-Runtime"] == "onnxruntime"
    expected = model.predict(PROBE)
    assert np.allclose(response.get_json()["predictions"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["tree", "forest"])
def test_tree_ensembles_are_served_in_float64(client, name):
    """Issue 14: a forest answered 2.4375587 (a float32 conversion) where scikit-learn says
    2.437557988975885; the float64 tree ensemble answers scikit-learn's numbers."""
    model = REGRESSORS[name].fit(X, Y_REG)
    accel = _register(client, name, model)["acceleration"]
    assert accel["status"] == "ready" and accel["precision"] == "float64", accel
    assert accel["served"] == {
        "form": "onnx-tree-ensemble",
        "runtime": "onnxruntime",
        "precision": "float64",
        "note": accelerate_module.PRECISION_NOTES["float64"],
    }
    assert [a["outcome"] for a in accel["attempts"]] == ["matched"]
    # Trees fitted without NaN still route it as scikit-learn does (to the larger child).
    assert accel["rows_with_missing_values"] > 0
    response = _predict(client, name, PROBE)
    assert response.headers["X-Model-Runtime"] == "onnxruntime"
    np.testing.assert_allclose(
        response.get_json()["predictions"], model.predict(PROBE), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("name", ["forest", "boosting"])
def test_a_publisher_may_prefer_the_float32_form_said_on_the_record(client, name):
    model = REGRESSORS[name].fit(X, Y_REG)
    accel = _register(client, name, model, accelerate="float32")["acceleration"]
    assert accel["status"] == "ready" and accel["requested"] == "float32", accel
    assert accel["served"] == {
        "form": "onnx-tree-ensemble",
        "runtime": "onnxruntime",
        "precision": "float32",
        "note": accelerate_module.PRECISION_NOTES["float32-trees"],
    }
    assert [(a["form"], a["precision"], a["outcome"]) for a in accel["attempts"]] == [
        ("onnx-tree-ensemble", "float32", "matched")
    ]
    missing = name == "forest"  # forests take NaN; GradientBoosting refuses it
    assert (accel["rows_with_missing_values"] > 0) is missing  # NaN routed as scikit-learn's
    holed = PROBE.copy()
    holed[::3, 1] = np.nan
    tolerance = accel["tolerance"]
    for probe in (PROBE, holed) if missing else (PROBE,):
        response = client.post(
            f"/models/{name}/1/predict",
            data=json.dumps({"instances": probe.tolist()}).replace("NaN", "null"),
            content_type="application/json",
        )
        assert response.status_code == 200, response.get_json()
        assert response.headers["X-Model-Runtime"] == "onnxruntime"
        answers = np.asarray(response.get_json()["predictions"])
        expected = model.predict(probe)
        bound = tolerance["atol"] + tolerance["rtol"] * np.abs(expected)
        assert np.all(np.abs(answers - expected) <= bound)
        assert not np.array_equal(answers, expected)  # float32 leaves: close, not equal


def test_float32_is_not_offered_where_it_could_change_a_label(client):
    model = CLASSIFIERS["forest-classifier"].fit(X, Y_CLS)
    accel = _register(client, "fc32", model, accelerate="float32")["acceleration"]
    assert accel["requested"] == "float32"
    assert accel["served"]["form"] == "onnx-tree-ensemble"
    assert accel["served"]["precision"] == "float64"


def test_float32_preference_keeps_the_exact_numpy_form_for_linear_models(client):
    accel = _register(client, "linear32", LinearRegression().fit(X, Y_REG), accelerate="float32")[
        "acceleration"
    ]
    assert accel["served"]["form"] == "numpy" and accel["precision"] == "float64"


@pytest.mark.parametrize("value", ["fast", "float16", 1, None])
def test_the_accelerate_field_is_validated(client, value):
    response = register(
        client,
        "bad",
        skops_bytes(LinearRegression().fit(X, Y_REG)),
        {"format": "skops", "accelerate": value},
        filename="m.skops",
    )
    assert response.status_code == 422
    assert "metadata.accelerate" in response.get_json()["errors"]
    assert client.get("/models/bad").status_code == 404


Y_MULTI = np.digitize(X[:, 0] + X[:, 1], [-0.5, 0.5])
HOLED = X.copy()
HOLED[RNG.random(X.shape) < 0.1] = np.nan
BOOSTING_CLASSIFIERS = {  # estimator, labels, whether it is fitted (and probed) with NaN
    "gb-binary": (lambda: GradientBoostingClassifier(n_estimators=15, random_state=0), Y_CLS),
    "gb-multiclass": (
        lambda: GradientBoostingClassifier(n_estimators=10, random_state=0),
        Y_MULTI,
    ),
    "hgb-binary": (lambda: HistGradientBoostingClassifier(max_iter=15), Y_CLS),
    "hgb-multiclass": (lambda: HistGradientBoostingClassifier(max_iter=10), Y_MULTI),
}


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("name", list(BOOSTING_CLASSIFIERS))
def test_boosting_classifiers_are_served_in_float64(tmp_path, name, threads):
    """Issue 14: gradient boosting classifiers were served through skl2onnx in float32; the
    float64 tree ensemble answers scikit-learn's labels and probabilities, NaN included for
    histogram boosting, whatever the number of ONNX Runtime threads."""
    from manage import create_app

    app = create_app(make_config(tmp_path, ACCELERATE="auto", ONNX_THREADS=threads))
    client = app.test_client()
    build, labels = BOOSTING_CLASSIFIERS[name]
    hist = name.startswith("hgb")
    model = build().fit(HOLED if hist else X, labels)
    example = (HOLED if hist else X)[:3]
    metadata = {"input_example": [[None if np.isnan(v) else v for v in r] for r in example]}
    accel = _register(client, name, model, **metadata)["acceleration"]
    assert accel["status"] == "ready" and accel["precision"] == "float64", accel
    assert accel["served"]["form"] == "onnx-tree-ensemble"
    assert [(a["form"], a["outcome"]) for a in accel["attempts"]] == [
        ("onnx-tree-ensemble", "matched")
    ]
    assert accel["max_abs_diff"] <= 1e-12  # float64 sums, not float32's ~1e-7
    if hist:  # its signature allows missing values: the check had rows with NaN
        assert accel["rows_with_missing_values"] > 0
    probe = PROBE.copy()
    if hist:
        probe[RNG.random(probe.shape) < 0.2] = np.nan
    rows = [[None if np.isnan(v) else v for v in row] for row in probe.tolist()]
    tolerance = accel["tolerance"]
    for method in ("predict", "predict_proba"):
        response = client.post(
            f"/models/{name}/1/predict", json={"instances": rows, "method": method}
        )
        assert response.status_code == 200, response.get_json()
        assert response.headers["X-Model-Runtime"] == "onnxruntime"
        got = response.get_json()["predictions"]
        if method == "predict":
            assert got == model.predict(probe).tolist()
        else:
            np.testing.assert_allclose(
                got, model.predict_proba(probe), rtol=tolerance["rtol"], atol=tolerance["atol"]
            )
    app.extensions["modelreg"].engine.dispose()


def test_a_pipeline_of_an_imputer_a_scaler_and_a_forest_is_served_in_float64(client):
    from sklearn.impute import SimpleImputer

    model = make_pipeline(
        SimpleImputer(), StandardScaler(), RandomForestRegressor(n_estimators=10, random_state=0)
    ).fit(HOLED, Y_REG)
    accel = _register(client, "imputed-forest", model)["acceleration"]
    assert accel["status"] == "ready" and accel["precision"] == "float64", accel
    assert accel["served"]["form"] == "onnx-tree-ensemble"
    assert accel["rows_with_missing_values"] > 0  # the imputer makes NaN acceptable
    probe = PROBE.copy()
    probe[RNG.random(probe.shape) < 0.2] = np.nan
    rows = [[None if np.isnan(v) else v for v in row] for row in probe.tolist()]
    response = client.post("/models/imputed-forest/1/predict", json={"instances": rows})
    assert response.headers["X-Model-Runtime"] == "onnxruntime"
    tolerance = accel["tolerance"]
    np.testing.assert_allclose(
        response.get_json()["predictions"],
        model.predict(probe),
        rtol=tolerance["rtol"],
        atol=tolerance["atol"],
    )
    assert accel["max_abs_diff"] <= 1e-12


def test_a_float32_conversion_is_labelled_as_such(client):
    # skl2onnx's float64 Imputer has no ONNX Runtime kernel: float32 is served, and said.
    from sklearn.impute import SimpleImputer

    model = make_pipeline(SimpleImputer(), LinearRegression()).fit(X, Y_REG)
    accel = _register(client, "imputed", model)["acceleration"]
    assert accel["status"] == "ready" and accel["precision"] == "float32", accel
    first, served = accel["attempts"]
    assert (first["form"], first["precision"], first["outcome"]) == ("onnx", "float64", "failed")
    assert "Imputer" in first["reason"] and "\n" not in first["reason"]
    assert (served["precision"], served["outcome"]) == ("float32", "matched")
    assert "float32" in accel["served"]["note"]


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_classifiers_are_accelerated_with_exact_labels_and_close_probabilities(client, name):
    model = CLASSIFIERS[name].fit(X, Y_CLS)
    record = _register(client, name, model)
    assert record["acceleration"]["status"] == "ready", record["acceleration"]
    labels = _predict(client, name, PROBE)
    assert labels.headers["X-Model-Runtime"] == "onnxruntime"
    assert labels.get_json()["predictions"] == model.predict(PROBE).tolist()
    proba = _predict(client, name, PROBE, "predict_proba").get_json()
    assert proba["classes"] == ["no", "yes"]
    assert np.allclose(proba["predictions"], model.predict_proba(PROBE), atol=1e-4)


def test_a_mismatching_conversion_is_rejected_and_sklearn_serves(client, monkeypatch):
    # A different model's conversion.
    wrong = DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, Y_REG + 50.0)
    real_convert = accelerate_module._convert
    monkeypatch.setattr(
        accelerate_module, "_convert", lambda model, width, dtype: real_convert(wrong, width, dtype)
    )
    real_build = trees_module.tree_ensemble_onnx
    monkeypatch.setattr(
        trees_module,
        "tree_ensemble_onnx",
        lambda model, width, **kwargs: real_build(wrong, width, **kwargs),
    )
    model = DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, Y_REG)
    record = _register(client, "mismatch", model)
    accel = record["acceleration"]
    assert accel["status"] == "mismatch"
    assert "sha256" not in accel and accel["max_abs_diff"] > 1
    assert "disagrees" in accel["reason"]
    # Every form tried, each with its precision and why it was not served; then what is.
    assert [(a["form"], a["precision"], a["outcome"]) for a in accel["attempts"]] == [
        ("onnx-tree-ensemble", "float64", "mismatch"),
        # skl2onnx's float64 trees declare a double output ONNX Runtime does not produce.
        ("onnx", "float64", "failed"),
        ("onnx", "float32", "mismatch"),
    ]
    assert "disagrees" in accel["attempts"][0]["reason"]
    assert "does not match expected type" in accel["attempts"][1]["reason"]
    assert accel["served"]["runtime"] == "sklearn" and "errors" not in accel
    response = _predict(client, "mismatch", PROBE)
    assert response.headers["X-Model-Runtime"] == "sklearn"
    assert np.allclose(response.get_json()["predictions"], model.predict(PROBE))


def test_a_model_with_string_inputs_is_unsupported_and_sklearn_serves(client):
    frame = pd.DataFrame({"color": ["red", "blue", "green"] * 10, "size": np.arange(30.0)})
    encode = ColumnTransformer(
        [("c", OneHotEncoder(handle_unknown="ignore"), ["color"])], remainder="passthrough"
    )
    model = make_pipeline(encode, LinearRegression()).fit(frame, frame["size"] * 2)
    response = register(
        client,
        "strings",
        skops_bytes(model),
        {"format": "skops", "input_example": [{"color": "red", "size": 1.0}]},
        filename="m.skops",
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["acceleration"]["status"] == "unsupported"
    predicted = client.post(
        "/models/strings/1/predict", json={"instances": [{"color": "blue", "size": 4.0}]}
    )
    assert predicted.headers["X-Model-Runtime"] == "sklearn"
    assert np.isclose(predicted.get_json()["predictions"][0], 8.0)


def test_publisher_can_turn_acceleration_off_for_a_version(client):
    record = _register(client, "optout", LinearRegression().fit(X, Y_REG), accelerate=False)
    assert record["acceleration"]["status"] == "off"
    assert _predict(client, "optout", PROBE).headers["X-Model-Runtime"] == "sklearn"


def test_global_switch_off_neither_converts_nor_serves_onnx(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path, ACCELERATE="off"))
    client = app.test_client()
    record = _register(client, "global", LinearRegression().fit(X, Y_REG))
    assert record["acceleration"] is None
    assert _predict(client, "global", PROBE).headers["X-Model-Runtime"] == "sklearn"


def test_tampered_conversion_falls_back_to_the_verified_original(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path, ACCELERATE="auto"))
    client = app.test_client()
    record = _register(client, "tamper", DecisionTreeRegressor(max_depth=4).fit(X, Y_REG))
    sha = record["acceleration"]["sha256"]
    blob = tmp_path / "instance" / "artifacts" / "sha256" / sha[:2] / sha
    blob.write_bytes(blob.read_bytes() + b"!")
    response = _predict(client, "tamper", PROBE)
    assert response.headers["X-Model-Runtime"] == "sklearn"


def test_a_conversion_this_runtime_cannot_load_falls_back_to_the_original(client, monkeypatch):
    from serving.formats import OnnxModel

    model = DecisionTreeRegressor(max_depth=4).fit(X, Y_REG)
    record = _register(client, "unloadable", model)
    assert record["acceleration"]["status"] == "ready"

    def refuse(cls, data, *, threads=1):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : unsupported model IR version")

    monkeypatch.setattr(OnnxModel, "load", classmethod(refuse))
    response = _predict(client, "unloadable", PROBE)
    assert response.headers["X-Model-Runtime"] == "sklearn"
    np.testing.assert_allclose(response.get_json()["predictions"], model.predict(PROBE))


def test_gc_keeps_the_conversion_of_a_live_version(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path, ACCELERATE="auto"))
    client = app.test_client()
    record = _register(client, "kept", DecisionTreeRegressor(max_depth=4).fit(X, Y_REG))
    deps = app.extensions["modelreg"]
    report = collect_garbage(deps.uow, deps.store, grace=timedelta(0))
    assert report.deleted == [] and report.referenced == 2
    assert client.delete("/models/kept/versions/1").status_code == 204
    report = collect_garbage(deps.uow, deps.store, grace=timedelta(0))
    assert sorted(report.deleted) == sorted(
        f"sha256/{s[:2]}/{s}" for s in (record["sha256"], record["acceleration"]["sha256"])
    )


def test_boolean_labels_come_back_as_booleans(client):
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    record = _register(client, "flags", model)
    assert record["acceleration"]["status"] == "ready", record["acceleration"]
    response = _predict(client, "flags", PROBE)
    assert response.headers["X-Model-Runtime"] == "numpy"
    assert response.get_json()["predictions"] == model.predict(PROBE).tolist()
    proba = _predict(client, "flags", PROBE, "predict_proba").get_json()
    assert proba["classes"] == [False, True]


NATIVE = {  # plain linear models: served by numpy, no conversion stored
    "linear": lambda: LinearRegression().fit(X, Y_REG),
    "ridge": lambda: Ridge(alpha=0.5).fit(X, Y_REG),
    "lasso": lambda: Lasso(alpha=0.01).fit(X, Y_REG),
    "two-targets": lambda: LinearRegression().fit(X, np.column_stack([Y_REG, -Y_REG])),
    "logistic": lambda: LogisticRegression().fit(X, Y_CLS),
    "multiclass": lambda: LogisticRegression().fit(X, np.digitize(X[:, 0], [-0.5, 0.5])),
}


@pytest.mark.parametrize("name", list(NATIVE))
def test_linear_models_are_served_by_numpy_exactly(client, name):
    model = NATIVE[name]()
    accel = _register(client, name, model)["acceleration"]
    assert accel["status"] == "ready" and accel["runtime"] == "numpy", accel
    # The arrays, as .npz, recorded where releases that knew only ONNX do not look.
    assert "sha256" not in accel
    assert len(accel["numpy"]["sha256"]) == 64 and accel["numpy"]["size"] < 4_096
    assert accel["rows_checked"] >= 300 and accel["max_abs_diff"] <= 1e-9
    response = _predict(client, name, PROBE)
    assert response.headers["X-Model-Runtime"] == "numpy"
    if hasattr(model, "predict_proba"):  # labels: exactly scikit-learn's
        assert response.get_json()["predictions"] == model.predict(PROBE).tolist()
    else:
        assert_linear_agreement(model, PROBE, response.get_json()["predictions"])
    if hasattr(model, "predict_proba"):
        proba = _predict(client, name, PROBE, "predict_proba").get_json()["predictions"]
        np.testing.assert_allclose(proba, model.predict_proba(PROBE), rtol=1e-12, atol=1e-15)
    cached = client.get("/serving/cache").get_json()["models"]
    assert [entry["bytes"] for entry in cached] == [pytest.approx(8 * 1024, abs=4 * 1024)]


def test_a_linear_model_fitted_on_a_dataframe_is_served_by_numpy(client):
    names = [f"f{i}" for i in range(6)]
    model = LinearRegression().fit(pd.DataFrame(X, columns=names), Y_REG)
    example = [dict(zip(names, row, strict=True)) for row in X[:3].tolist()]
    response = register(
        client,
        "named",
        skops_bytes(model),
        {"format": "skops", "input_example": example},
        filename="m.skops",
    )
    assert response.get_json()["acceleration"]["runtime"] == "numpy", response.get_json()
    rows = [dict(zip(names, row, strict=True)) for row in PROBE.tolist()]
    predicted = client.post("/models/named/1/predict", json={"instances": rows})
    assert predicted.headers["X-Model-Runtime"] == "numpy"
    assert_linear_agreement(
        model, pd.DataFrame(PROBE, columns=names), predicted.get_json()["predictions"]
    )


def test_a_numpy_form_that_disagrees_falls_back_to_onnx(client, monkeypatch):
    from serving.linear import NativeLinear

    real_predict = NativeLinear.predict
    monkeypatch.setattr(NativeLinear, "predict", lambda self, X: real_predict(self, X) + 1.0)
    model = LinearRegression().fit(X, Y_REG)
    accel = _register(client, "off-by-one", model)["acceleration"]
    assert accel["runtime"] == "onnxruntime" and len(accel["sha256"]) == 64
    numpy_attempt = accel["attempts"][0]
    assert numpy_attempt["form"] == "numpy" and numpy_attempt["outcome"] == "mismatch"
    assert numpy_attempt["failed_method"] == "predict"
    assert accel["served"]["form"] == "onnx" and accel["attempts"][-1]["outcome"] == "matched"
    assert _predict(client, "off-by-one", PROBE).headers["X-Model-Runtime"] == "onnxruntime"


def test_the_numpy_form_is_stored_as_plain_arrays(client, tmp_path):
    from serving.linear import NativeLinear

    model = LogisticRegression().fit(X, Y_CLS)
    sha = _register(client, "arrays", model)["acceleration"]["numpy"]["sha256"]
    blob = tmp_path / "instance" / "artifacts" / "sha256" / sha[:2] / sha
    with np.load(blob, allow_pickle=False) as stored:  # no pickle needed to read it
        assert sorted(stored.files) == ["classes", "coef", "intercept"]
        assert stored["classes"].tolist() == ["no", "yes"]
    native = NativeLinear.from_bytes(blob.read_bytes())
    assert native.predict(PROBE).tolist() == model.predict(PROBE).tolist()  # labels


@pytest.mark.parametrize("estimator", [LinearRegression(), DecisionTreeRegressor(max_depth=4)])
def test_a_tampered_conversion_of_either_runtime_is_not_served(tmp_path, estimator):
    from manage import create_app

    app = create_app(make_config(tmp_path, ACCELERATE="auto"))
    client = app.test_client()
    model = estimator.fit(X, Y_REG)
    accel = _register(client, "tampered", model)["acceleration"]
    sha = (accel.get("numpy") or accel)["sha256"]
    blob = tmp_path / "instance" / "artifacts" / "sha256" / sha[:2] / sha
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")
    response = _predict(client, "tampered", PROBE)
    assert response.headers["X-Model-Runtime"] == "sklearn"
    assert response.get_json()["predictions"] == model.predict(PROBE).tolist()


def test_gc_keeps_the_numpy_form_of_a_live_version(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path, ACCELERATE="auto"))
    client = app.test_client()
    record = _register(client, "kept-linear", LinearRegression().fit(X, Y_REG))
    deps = app.extensions["modelreg"]
    report = collect_garbage(deps.uow, deps.store, grace=timedelta(0))
    assert report.deleted == [] and report.referenced == 2
    assert client.delete("/models/kept-linear/versions/1").status_code == 204
    report = collect_garbage(deps.uow, deps.store, grace=timedelta(0))
    numpy_sha = record["acceleration"]["numpy"]["sha256"]
    assert sorted(report.deleted) == sorted(
        f"sha256/{s[:2]}/{s}" for s in (record["sha256"], numpy_sha)
    )


@pytest.mark.parametrize(
    ("acceleration", "runtime", "sha256"),
    [
        # Recorded before there were two runtimes: an ONNX file, no "runtime" key.
        ({"status": "ready", "sha256": "a" * 64, "size": 10}, "onnxruntime", "a" * 64),
        (
            {"status": "ready", "runtime": "onnxruntime", "sha256": "b" * 64},
            "onnxruntime",
            "b" * 64,
        ),
        (
            {"status": "ready", "runtime": "numpy", "numpy": {"sha256": "c" * 64, "size": 9}},
            "numpy",
            "c" * 64,
        ),
        ({"status": "mismatch", "sha256": "d" * 64}, None, None),
        ({"status": "off"}, None, None),
        (None, None, None),
    ],
)
def test_version_records_say_which_runtime_loads_which_blob(acceleration, runtime, sha256):
    from datetime import UTC, datetime

    from registry.records import VersionRecord

    now = datetime.now(UTC)
    record = VersionRecord(
        name="m",
        version=1,
        status="ready",
        format="skops",
        sha256="e" * 64,
        size=1,
        artifact_key="k",
        description="",
        tags={},
        metrics={},
        params={},
        source={},
        input_example=None,
        signature=None,
        created_at=now,
        created_by="t",
        updated_at=now,
        acceleration=acceleration,
    )
    assert record.accel_runtime == runtime
    assert record.accel_key == (f"sha256/{sha256[:2]}/{sha256}" if sha256 else None)
