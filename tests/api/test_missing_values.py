"""Missing values (issue 14): one rule, `signature.allow_missing`, at registration, promotion
and every predict protocol, with real models that handle NaN and real ones that do not."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

from tests.conftest import make_config, skops_bytes
from tests.helpers import problem, register

RNG = np.random.default_rng(14)
X = RNG.normal(size=(200, 3))
Y = X @ np.array([2.0, -1.0, 0.5]) + 3
X_HOLED = X.copy()
X_HOLED[RNG.random(X.shape) < 0.2] = np.nan  # fitted with missing values: NaN has a branch
ROWS = [[0.5, None, -1.0], [None, 0.2, 0.3], [1.0, 2.0, 3.0]]
AS_NAN = np.array([[np.nan if v is None else v for v in row] for row in ROWS])
HEADER_LENGTH = "Inference-Header-Content-Length"


def boosting() -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X_HOLED, Y)


def imputed() -> Any:
    return make_pipeline(SimpleImputer(), LinearRegression()).fit(X_HOLED, Y)


def plain() -> LinearRegression:
    return LinearRegression().fit(X, Y)


@pytest.fixture
def client(tmp_path, database_url):
    from manage import create_app

    app = create_app(make_config(tmp_path, database_url))
    yield app.test_client()
    app.extensions["modelreg"].engine.dispose()


def _register(client, name: str, model: Any, **metadata: Any):
    return register(
        client, name, skops_bytes(model), {"format": "skops", **metadata}, filename="m.skops"
    )


def _registered(client, name: str, model: Any, **metadata: Any) -> dict[str, Any]:
    response = _register(client, name, model, **metadata)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _predict(client, name: str, body: dict[str, Any]):
    return client.post(f"/models/{name}/1/predict", json=body)


def _v2_binary(client, name: str, X: np.ndarray):
    raw = X.astype("<f8").tobytes()
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": list(X.shape),
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    head = json.dumps(header).encode()
    return client.post(
        f"/v2/models/{name}/versions/1/infer",
        data=head + raw,
        headers={HEADER_LENGTH: str(len(head))},
    )


@pytest.mark.parametrize("make", [boosting, imputed], ids=["hist-gradient-boosting", "imputer"])
def test_a_model_that_handles_missing_values_gets_them_everywhere(client, make):
    model = make()
    record = _registered(client, "nan", model, input_example=ROWS)
    assert record["signature"]["allow_missing"] is True  # inferred from the model
    assert record["input_example"] == ROWS
    expected = model.predict(AS_NAN)

    fast = client.application.wsgi_app  # the predict fast path, in front of Flask
    for body in ({"instances": ROWS}, {"inputs": ROWS}, {"dataframe_split": {"data": ROWS}}):
        response = _predict(client, "nan", body)
        assert response.status_code == 200, (body, response.get_json())
        np.testing.assert_allclose(response.get_json()["predictions"], expected, rtol=1e-9)
    assert fast.answered >= 2  # once loaded, the same rule answers on the fast path

    # V2: null in JSON tensor data, and NaN in binary FP64 data.
    v2 = client.post(
        "/v2/models/nan/versions/1/infer",
        json={
            "inputs": [
                {
                    "name": "input",
                    "shape": [3, 3],
                    "datatype": "FP64",
                    "data": [v for row in ROWS for v in row],
                }
            ]
        },
    )
    assert v2.status_code == 200, v2.get_json()
    np.testing.assert_allclose(v2.get_json()["outputs"][0]["data"], expected, rtol=1e-9)
    binary = _v2_binary(client, "nan", AS_NAN)
    assert binary.status_code == 200, binary.get_data(as_text=True)
    np.testing.assert_allclose(binary.get_json()["outputs"][0]["data"], expected, rtol=1e-9)

    # Infinity is never a missing value.
    refused = _v2_binary(client, "nan", np.array([[np.inf, 0.0, 0.0]]))
    assert refused.status_code == 400 and "infinity" in refused.get_json()["error"]

    # The promotion gate predicts the example with its nulls instead of refusing it.
    promoted = client.post("/models/nan/versions/1/promote", json={})
    assert promoted.status_code == 200, promoted.get_json()


def test_a_model_that_refuses_missing_values_refuses_them_everywhere(client):
    assert "allow_missing" not in _registered(client, "strict", plain())["signature"]
    # Registration: an example with a null is refused, naming the row (before, it was
    # accepted here and refused at promotion).
    body = problem(_register(client, "strict", plain(), input_example=ROWS))
    assert body["status"] == 422
    assert "does not accept missing values" in body["errors"]["metadata.input_example[0]"]

    response = _predict(client, "strict", {"instances": ROWS})
    assert response.status_code == 422
    errors = problem(response)["errors"]
    assert errors["instances[0][1]"].startswith("missing value (null): this model does not")
    assert "instances[1][0]" in errors

    json_v2 = client.post(
        "/v2/models/strict/versions/1/infer",
        json={
            "inputs": [
                {"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1.0, None, 2.0]}
            ]
        },
    )
    assert json_v2.status_code == 400 and "missing values" in json_v2.get_json()["error"]
    binary = _v2_binary(client, "strict", AS_NAN)
    assert binary.status_code == 400 and "missing values" in binary.get_json()["error"]


def test_the_publisher_declaration_wins_over_the_inference(client):
    record = _registered(
        client,
        "declared",
        boosting(),
        signature={"allow_missing": False},
        input_example=[[1, 2, 3]],
    )
    assert record["signature"]["allow_missing"] is False
    response = _predict(client, "declared", {"instances": ROWS})
    assert response.status_code == 422
    assert "instances[0][1]" in problem(response)["errors"]
    # Declared true for a model scikit-learn cannot tell about: accepted at registration;
    # a model that then refuses NaN answers 422 (never 500).
    record = _registered(client, "claimed", plain(), signature={"allow_missing": True})
    assert record["signature"]["allow_missing"] is True
    response = client.post("/models/claimed/1/predict", json={"instances": ROWS})
    assert response.status_code == 422, response.get_json()
    problem(response)


def test_accelerated_forms_are_checked_on_missing_values(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path, ACCELERATE="auto"))
    client = app.test_client()
    try:
        for name, model in (("boosting", boosting()), ("imputed", imputed())):
            record = _registered(client, name, model, input_example=ROWS)
            accel = record["acceleration"]
            assert accel["rows_with_missing_values"] >= 100, accel
            response = _predict(client, name, {"instances": ROWS})
            assert response.status_code == 200, response.get_json()
            # Whichever form serves, it answers as scikit-learn does with NaN.
            np.testing.assert_allclose(
                response.get_json()["predictions"], model.predict(AS_NAN), rtol=1e-4, atol=1e-4
            )
            served = accel["served"]
            assert response.headers["X-Model-Runtime"] == served["runtime"], accel
    finally:
        app.extensions["modelreg"].engine.dispose()


def test_missing_strings_reach_an_imputing_pipeline_as_pandas_missing(client):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame(
        {"color": ["red", "blue", None, "red"] * 10, "size": [1.0, np.nan, 3.0, 4.0] * 10}
    )
    encode = ColumnTransformer(
        [
            (
                "c",
                make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()),
                ["color"],
            ),
            ("n", SimpleImputer(), ["size"]),
        ]
    )
    model = make_pipeline(encode, LinearRegression()).fit(frame, np.arange(40.0))
    rows = [{"color": None, "size": 2.0}, {"color": "blue", "size": None}]
    record = _registered(client, "mixed", model, input_example=rows)
    assert record["signature"]["allow_missing"] is True
    # The first row's null says nothing of its column's type: the next row's value does.
    assert record["signature"]["inputs"] == [
        {"name": "color", "type": "string"},
        {"name": "size", "type": "double"},
    ]
    response = _predict(client, "mixed", {"instances": rows})
    assert response.status_code == 200, response.get_json()
    expected = model.predict(pd.DataFrame({"color": [np.nan, "blue"], "size": [2.0, np.nan]}))
    np.testing.assert_allclose(response.get_json()["predictions"], expected, rtol=1e-9)
    assert client.post("/models/mixed/versions/1/promote", json={}).status_code == 200
