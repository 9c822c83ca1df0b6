"""Integer fields take integral floats (`6.0`: an integer to JSON Schema, and what some
encoders write) and refuse fractions with a 422 that names the field, never truncating."""

from __future__ import annotations

import pytest

from tests.conftest import fit_linear, joblib_bytes
from tests.helpers import problem, register


@pytest.fixture
def client(sqlite_client):
    for _ in range(2):
        assert register(sqlite_client, "price", joblib_bytes(fit_linear())).status_code == 201
    return sqlite_client


def _promote(client, version: int, **body):
    return client.post(f"/models/price/versions/{version}/promote", json=body)


def test_expected_version_accepts_an_integral_float(client):
    assert _promote(client, 1).status_code == 200
    moved = _promote(client, 2, expected_version=1.0)
    assert moved.status_code == 200, moved.data
    assert moved.get_json()["previous_version"] == 1
    # Still a compare-and-set: 241749.0 is version 241749, which production is not.
    assert _promote(client, 1, expected_version=241749.0).status_code == 409


@pytest.mark.parametrize("value", [1.5, "2", True, [1]])
def test_expected_version_refuses_what_is_not_a_whole_number(client, value):
    answer = _promote(client, 2, expected_version=value)
    assert answer.status_code == 422
    assert "expected_version" in problem(answer)["errors"]


def test_a_fraction_is_named_in_the_answer(client):
    body = problem(_promote(client, 2, expected_version=1.5))
    assert "whole number" in body["errors"]["expected_version"]


@pytest.mark.parametrize(("limit", "status"), [("1", 200), ("1.0", 200), ("1.5", 422)])
def test_limit_in_the_query(client, limit, status):
    answer = client.get(f"/models/price/versions?limit={limit}")
    assert answer.status_code == status, answer.data
    if status == 200:
        assert len(answer.get_json()["versions"]) == 1
    else:
        assert "limit" in problem(answer)["errors"]


def test_signature_n_features_accepts_an_integral_float(sqlite_client):
    accepted = register(
        sqlite_client, "sig", joblib_bytes(fit_linear()), {"signature": {"n_features": 3.0}}
    )
    assert accepted.status_code == 201, accepted.data
    assert accepted.get_json()["signature"]["n_features"] == 3
    refused = register(
        sqlite_client, "sig", joblib_bytes(fit_linear()), {"signature": {"n_features": 2.5}}
    )
    assert refused.status_code == 422
    assert any("n_features" in field for field in problem(refused)["errors"])


@pytest.mark.parametrize(
    ("shape", "status"), [([1, 3], 200), ([1.0, 3.0], 200), ([1, 3.5], 400), ([True, 3], 400)]
)
def test_v2_tensor_shapes(client, shape, status):
    """The Open Inference Protocol answers bad input 400 (its own convention), not 422."""
    tensor = {"name": "input", "shape": shape, "datatype": "FP64", "data": [1.0, 2.0, 3.0]}
    answer = client.post("/v2/models/price/versions/1/infer", json={"inputs": [tensor]})
    assert answer.status_code == status, answer.data
    if status == 400:
        assert "shape" in answer.get_json()["error"]
