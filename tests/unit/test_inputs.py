"""Unit tests for serving.inputs: request formats, error reporting, dtypes, and a fuzz pass."""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from registry.errors import InvalidInput, MalformedRequest
from serving import inputs as inputs_mod
from serving.inputs import (
    MAX_REPORTED_ERRORS,
    DecodedRequest,
    InputPlan,
    build_input_plan,
    columns_to_matrix,
    decode_predict_body,
    rows_to_matrix,
)

NAMES = ["sqft", "age", "rooms"]
ROWS = [[1500.0, 12.0, 3.0], [900.5, 40.0, 2.0]]
EXPECTED = np.array(ROWS, dtype=np.float64)
METHODS = ("predict", "predict_proba")


def plan(signature: dict[str, Any] | None = None, **kw: Any) -> InputPlan:
    kw.setdefault("max_rows", 100)
    kw.setdefault("methods", METHODS)
    return build_input_plan(signature, **kw)


NAMED = plan({"n_features": 3, "feature_names": NAMES})
UNNAMED = plan({"n_features": 3})
UNKNOWN = plan(None)


def decode(body: Any, p: InputPlan = NAMED) -> DecodedRequest:
    return decode_predict_body(body if isinstance(body, bytes) else orjson.dumps(body), p)


def invalid(body: Any, p: InputPlan = NAMED) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        decode(body, p)
    err = info.value
    assert err.errors, "every InvalidInput names at least one field"
    assert len(err.errors) <= MAX_REPORTED_ERRORS
    return err


def records(rows: list[list[float]]) -> list[dict[str, float]]:
    return [dict(zip(NAMES, r, strict=True)) for r in rows]


# --------------------------------------------------------------------------- accepted formats

SAME_DATA = {
    "instances lists": {"instances": ROWS},
    "instances objects": {"instances": records(ROWS)},
    "instances objects, keys shuffled": {
        "instances": [dict(reversed(r.items())) for r in records(ROWS)]
    },
    "inputs columns": {"inputs": {n: [r[j] for r in ROWS] for j, n in enumerate(NAMES)}},
    "inputs lists": {"inputs": ROWS},
    "dataframe_split": {"dataframe_split": {"columns": NAMES, "data": ROWS, "index": [7, 8]}},
    "dataframe_split positional": {"dataframe_split": {"data": ROWS}},
    "dataframe_split permuted": {
        "dataframe_split": {
            "columns": ["rooms", "sqft", "age"],
            "data": [[r[2], r[0], r[1]] for r in ROWS],
        }
    },
    "dataframe_records": {"dataframe_records": records(ROWS)},
}


@pytest.mark.parametrize("body", SAME_DATA.values(), ids=SAME_DATA.keys())
def test_every_format_gives_the_same_matrix(body: dict[str, Any]) -> None:
    out = decode(body)
    assert isinstance(out.X, np.ndarray)
    assert out.X.dtype == np.float64 and out.X.flags.c_contiguous
    np.testing.assert_array_equal(out.X, EXPECTED)
    assert out.n_rows == 2 and out.method == "predict"


@pytest.mark.parametrize("body", SAME_DATA.values(), ids=SAME_DATA.keys())
def test_every_format_gives_the_same_dataframe(body: dict[str, Any]) -> None:
    out = decode(body, plan({"feature_names": NAMES}, needs_dataframe=True))
    assert isinstance(out.X, pd.DataFrame)
    assert list(out.X.columns) == NAMES
    assert (out.X.dtypes == np.float64).all()
    np.testing.assert_array_equal(out.X.to_numpy(), EXPECTED)


def test_integers_become_float64_and_unknown_width_is_accepted() -> None:
    out = decode({"instances": [[1, 2], [3, 4]]}, UNKNOWN)
    assert out.X.dtype == np.float64 and out.X.shape == (2, 2)
    out = decode(
        {"dataframe_split": {"columns": ["x", "y", "z", "w"], "data": [[1, 2, 3, 4]]}}, UNKNOWN
    )
    assert out.X.shape == (1, 4)


def test_shared_helpers_accept_python_objects_from_other_protocols() -> None:
    X = rows_to_matrix([(1, 2, 3), [np.float64(4), np.int64(5), 6.0]], NAMED, "rows")
    np.testing.assert_array_equal(X, [[1, 2, 3], [4, 5, 6]])
    X = columns_to_matrix({"sqft": (1.0, 2.0), "age": [3, 4], "rooms": [5, 6]}, NAMED, "cols")
    np.testing.assert_array_equal(X, [[1, 3, 5], [2, 4, 6]])
    assert X.flags.c_contiguous
    with pytest.raises(InvalidInput) as info:  # NaN can only come from Python callers, not orjson
        rows_to_matrix([[1.0, float("nan"), 3.0]], NAMED, "rows")
    assert info.value.errors == {"rows[0].age": "expected a finite number"}


def test_slow_path_builds_the_same_matrix_as_the_fast_path() -> None:
    # The slow path is the source of truth; on valid data it must agree with the fast path.
    rng = random.Random(1)
    rows = [[rng.uniform(-1e6, 1e6) for _ in range(3)] for _ in range(50)]
    for p in (NAMED, UNKNOWN, plan({"feature_names": NAMES}, needs_dataframe=True)):
        fast = rows_to_matrix(rows, p, "instances")
        slow = inputs_mod._rows_slow(rows, p, "instances")
        assert type(fast) is type(slow)
        np.testing.assert_array_equal(np.asarray(fast), np.asarray(slow))


# --------------------------------------------------------------------------- envelope errors


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"{",
        b"[1, 2]",
        b'"text"',
        b"null",
        b"3",
        b"\xff\xfe",
        b'{"instances": [[NaN]]}',
    ],
)
def test_non_json_or_non_object_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        decode_predict_body(body, NAMED)


def test_missing_payload_key_lists_accepted_keys() -> None:
    err = invalid({})
    assert "instances" in err.detail and "dataframe_split" in err.detail
    err = invalid({"method": "predict"})
    assert "body" in err.errors


def test_two_payload_keys_are_rejected() -> None:
    err = invalid({"instances": ROWS, "inputs": ROWS})
    assert set(err.errors) == {"instances", "inputs"}


def test_unknown_top_level_key_is_named_and_accepted_keys_listed() -> None:
    err = invalid({"instance": ROWS})
    assert err.errors == {"instance": "unknown key"}
    assert "instances" in err.detail
    err = invalid({"instances": ROWS, "extra": 1})
    assert "extra" in err.errors


def test_huge_unknown_key_is_clipped() -> None:
    err = invalid({"k" * 100_000: 1})
    assert len(err.detail) < 500 and all(len(k) < 100 for k in err.errors)


@pytest.mark.parametrize("value", [None, 3, "rows", {"a": 1}, True])
def test_payload_of_the_wrong_kind(value: Any) -> None:
    err = invalid({"instances": value})
    assert "instances" in err.errors


# --------------------------------------------------------------------------- row counts and widths


@pytest.mark.parametrize(
    "body",
    [{"instances": []}, {"inputs": {n: [] for n in NAMES}}, {"dataframe_split": {"data": []}}],
)
def test_zero_rows(body: dict[str, Any]) -> None:
    err = invalid(body)
    assert "no rows" in err.detail


def test_max_rows() -> None:
    small = plan({"feature_names": NAMES}, max_rows=5)
    assert decode({"instances": ROWS * 2 + [ROWS[0]]}, small).n_rows == 5
    for body in ({"instances": ROWS * 3}, {"inputs": {n: [1.0] * 6 for n in NAMES}}):
        err = invalid(body, small)
        assert "5" in err.detail and "6" in err.detail


def test_wrong_width_names_the_first_offending_row() -> None:
    p = plan({"n_features": 8})
    rows: list[list[float]] = [[1.0] * 8] * 3 + [[1.0] * 7, [1.0] * 9]
    err = invalid({"instances": rows}, p)
    assert next(iter(err.errors.items())) == ("instances[3]", "expected 8 features, got 7")
    assert err.errors["instances[4]"] == "expected 8 features, got 9"
    assert err.detail.startswith("instances[3]: expected 8 features, got 7")


def test_wrong_width_says_features_and_names_the_expected_columns() -> None:
    err = invalid({"instances": [[1.0, 2.0]]})
    assert err.errors == {"instances[0]": "expected 3 features (sqft, age, rooms), got 2"}
    wide = plan({"feature_names": [f"f{j}" for j in range(12)]})
    reason = invalid({"instances": [[1.0]]}, wide).errors["instances[0]"]
    assert reason.startswith("expected 12 features (f0, f1,") and "(2 more)" in reason


def test_unknown_width_must_be_consistent_and_non_empty() -> None:
    err = invalid({"instances": [[1, 2], [3]]}, UNKNOWN)
    assert "instances[1]" in err.errors
    err = invalid({"instances": [[]]}, UNKNOWN)
    assert "instances[0]" in err.errors


def test_flat_list_is_rejected_with_a_hint() -> None:
    for p in (NAMED, UNNAMED, UNKNOWN):
        err = invalid({"instances": [1.0, 2.0, 3.0]}, p)
        assert "list of rows" in err.errors["instances"]


def test_flat_list_is_one_value_per_row_when_there_is_one_feature() -> None:
    p = plan({"n_features": 1})
    for body in ({"instances": [1, 2.5, 3]}, {"instances": [[1], [2.5], [3]]}):
        out = decode(body, p)
        assert out.X.shape == (3, 1) and out.X.dtype == np.float64 and out.X.flags.c_contiguous
        np.testing.assert_array_equal(out.X[:, 0], [1, 2.5, 3])
    err = invalid({"instances": [1, None, "x"]}, p)
    assert set(err.errors) == {"instances[1]", "instances[2]"}


# --------------------------------------------------------------------------- bad values

BAD_VALUES = {
    "null": None,
    "NaN string": "NaN",
    "Infinity string": "Infinity",
    "numeric string": "1.5",
    "text": "big",
    "nested list": [1.0],
    "object": {"v": 1},
    "true": True,
    "false": False,
}


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_value_is_named_by_row_and_feature(value: Any) -> None:
    row: list[Any] = [1.0, 2.0, 3.0]
    row[1] = value
    assert list(invalid({"instances": [ROWS[0], row]}).errors) == ["instances[1].age"]
    assert list(invalid({"instances": [row]}, UNNAMED).errors) == ["instances[0][1]"]
    assert list(invalid({"instances": [row]}, UNKNOWN).errors) == ["instances[0][1]"]
    obj = {"sqft": 1.0, "age": value, "rooms": 3.0}
    assert list(invalid({"dataframe_records": [obj]}).errors) == ["dataframe_records[0].age"]
    cols = {"sqft": [1.0, 2.0], "age": [2.0, value], "rooms": [3.0, 4.0]}
    assert list(invalid({"inputs": cols}).errors) == ["inputs.age[1]"]
    split = {"columns": NAMES, "data": [row]}
    assert list(invalid({"dataframe_split": split}).errors) == ["dataframe_split.data[0].age"]


def test_reasons_are_specific() -> None:
    err = invalid({"instances": [[None, "NaN", True]]})
    assert err.errors == {
        "instances[0].sqft": inputs_mod.MISSING_REFUSED,
        "instances[0].age": "expected a finite number, got the string 'NaN'",
        "instances[0].rooms": "expected a number, got a boolean",
    }


def test_missing_and_unknown_keys_in_object_rows() -> None:
    err = invalid(
        {"instances": [{"sqft": 1, "age": 2, "rooms": 3}, {"sqft": 1, "rooms": 3, "color": 1}]}
    )
    assert err.errors == {"instances[1].age": "missing", "instances[1].color": "unknown feature"}


def test_object_rows_need_feature_names() -> None:
    err = invalid({"instances": [{"a": 1, "b": 2, "c": 3}]}, UNNAMED)
    assert "instances[0]" in err.errors


def test_columns_missing_unknown_and_uneven() -> None:
    err = invalid({"inputs": {"sqft": [1.0], "age": [2.0], "color": [3.0]}})
    assert err.errors == {"inputs.rooms": "missing column", "inputs.color": "unknown column"}
    err = invalid({"inputs": {"sqft": [1.0, 2.0], "age": [2.0], "rooms": [3.0, 4.0]}})
    assert err.errors == {"inputs.age": "expected 2 values like column 'sqft', got 1"}
    err = invalid({"inputs": {"sqft": 1.0, "age": [2.0], "rooms": [3.0]}})
    assert "inputs.sqft" in err.errors
    err = invalid({"inputs": {"a": [1.0], "b": [2.0], "c": [3.0]}}, UNNAMED)
    assert "feature names" in err.errors["inputs"]


def test_dataframe_split_errors() -> None:
    err = invalid({"dataframe_split": {"columns": ["sqft", "age", "x"], "data": ROWS}})
    assert "missing: rooms" in err.errors["dataframe_split.columns"]
    assert "unknown: x" in err.errors["dataframe_split.columns"]
    assert "dataframe_split.data" in invalid({"dataframe_split": {"columns": NAMES}}).errors
    assert (
        "dataframe_split.orient" in invalid({"dataframe_split": {"data": ROWS, "orient": 1}}).errors
    )
    err = invalid({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}, UNNAMED)
    assert "dataframe_split.columns" in err.errors
    err = invalid({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2, 3]]}}, UNKNOWN)
    assert err.errors == {"dataframe_split.data[0]": "expected 2 features, got 3"}


def test_error_count_is_capped_on_huge_bad_requests() -> None:
    p = plan({"n_features": 8}, max_rows=20_000)
    err = invalid({"instances": [["x"] * 8] * 10_000}, p)
    assert len(err.errors) == MAX_REPORTED_ERRORS
    assert "and more" in err.detail and len(err.detail) < 300
    err = invalid({"instances": [[1.0] * 7] * 10_000}, p)
    assert len(err.errors) == MAX_REPORTED_ERRORS


# --------------------------------------------------------------------------- method


def test_method_defaults_to_predict_and_accepts_supported_ones() -> None:
    assert decode({"instances": ROWS}).method == "predict"
    assert decode({"instances": ROWS, "method": "predict_proba"}).method == "predict_proba"
    assert decode({"method": "predict", "inputs": ROWS}).method == "predict"


@pytest.mark.parametrize("method", ["transform", "PREDICT", "", 1, None, ["predict"], {"m": 1}])
def test_unsupported_method_lists_allowed_ones(method: Any) -> None:
    err = invalid({"instances": ROWS, "method": method})
    assert list(err.errors) == ["method"]
    assert "predict, predict_proba" in err.errors["method"]


def test_predict_proba_is_refused_when_the_model_lacks_it() -> None:
    p = plan({"n_features": 3}, methods=["predict"])
    err = invalid({"instances": ROWS, "method": "predict_proba"}, p)
    assert "allowed: predict" in err.detail


# --------------------------------------------------------------------------- DataFrame path


def test_dataframe_model_predicts_without_feature_name_warning() -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(20, 3)), columns=NAMES)
    y = train @ np.array([2.0, -1.0, 0.5]) + 3.0
    model = LinearRegression().fit(train, y)
    p = plan({"n_features": 3, "feature_names": NAMES}, needs_dataframe=True)
    rows = train.head(4).to_numpy().tolist()
    bodies = [
        {"instances": rows},
        {"instances": records(rows)},
        {
            "dataframe_split": {
                "columns": ["age", "rooms", "sqft"],
                "data": [[r[1], r[2], r[0]] for r in rows],
            }
        },
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for body in bodies:
            out = decode(body, p)
            assert isinstance(out.X, pd.DataFrame) and list(out.X.columns) == NAMES
            np.testing.assert_allclose(model.predict(out.X), model.predict(train.head(4)))


def test_typed_columns_give_a_dataframe_with_per_column_dtypes() -> None:
    sig = {
        "inputs": [
            {"name": "city", "type": "string"},
            {"name": "garden", "type": "boolean"},
            {"name": "rooms", "type": "long"},
            {"name": "sqft", "type": "double"},
        ]
    }
    p = plan(sig)
    assert p.feature_names == ("city", "garden", "rooms", "sqft") and p.n_features == 4
    rows = [["Oslo", True, 3, 70.5], ["Rome", False, 2, 55]]
    for body in (
        {"instances": rows},
        {
            "inputs": {
                "city": ["Oslo", "Rome"],
                "garden": [True, False],
                "rooms": [3, 2],
                "sqft": [70.5, 55],
            }
        },
        {"dataframe_records": [dict(zip(p.feature_names, r, strict=True)) for r in rows]},
    ):
        X = decode(body, p).X
        assert isinstance(X, pd.DataFrame) and list(X.columns) == list(p.feature_names)
        assert X.dtypes.tolist() == [
            np.dtype(object),
            np.dtype(bool),
            np.dtype(np.int64),
            np.dtype(np.float64),
        ]
        assert X["city"].tolist() == ["Oslo", "Rome"] and X["rooms"].tolist() == [3, 2]
    X = decode({"instances": [["Oslo", True, 2.5, 1]]}, p).X
    assert X["rooms"].dtype == np.float64  # non-integral "long" stays float64
    err = invalid({"instances": [[1, 1, True, "x"]]}, p)
    assert set(err.errors) == {
        "instances[0].city",
        "instances[0].garden",
        "instances[0].rooms",
        "instances[0].sqft",
    }


def test_typed_columns_without_names_use_positional_labels() -> None:
    p = plan({"inputs": [{"type": "string"}, {"type": "double"}]})
    X = decode({"instances": [["a", 1], ["b", 2]]}, p).X
    assert isinstance(X, pd.DataFrame) and list(X.columns) == [0, 1]
    assert invalid({"instances": [["a", "b"]]}, p).errors == {
        "instances[0][1]": "expected a number, got the string 'b'"
    }


# --------------------------------------------------------------------------- plan building


def test_build_input_plan_resolves_the_signature() -> None:
    p = plan(None)
    assert (p.n_features, p.feature_names, p.column_types, p.needs_dataframe) == (
        None,
        None,
        None,
        False,
    )
    p = plan({"feature_names": NAMES, "inputs": None, "classes": [0, 1]})
    assert p.n_features == 3 and p.feature_names == tuple(NAMES) and p.column_types is None
    p = plan({"inputs": [{"name": "a", "type": "float"}, {"name": "b", "type": "integer"}]})
    assert p.feature_names == ("a", "b") and p.column_types == ("double", "long")
    p = plan(
        {
            "feature_names": ["b", "a"],
            "inputs": [{"name": "a", "type": "string"}, {"name": "b", "type": "double"}],
        }
    )
    assert p.column_types == ("double", "string")  # types follow names when both are given
    p = plan({"n_features": 2}, methods=["predict"])
    assert p.methods == frozenset({"predict"}) and p.max_rows == 100


@pytest.mark.parametrize(
    "signature",
    [
        {"n_features": 2, "feature_names": NAMES},
        {"n_features": 0},
        {"n_features": "3"},
        {"feature_names": ["a", "a"]},
        {"feature_names": "abc"},
        {"inputs": [{"name": "a", "type": "tensor"}]},
        {"feature_names": NAMES, "inputs": [{"name": "a", "type": "double"}]},
    ],
)
def test_contradictory_signature_is_refused_at_load_time(signature: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        plan(signature)


# --------------------------------------------------------------------------- fuzz


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**63), 2**64 - 1)
    if kind == 3:
        return rng.choice([0.0, -1.5, 1e300, rng.uniform(-1e6, 1e6)])
    if kind == 4:
        return rng.choice(["", "NaN", "1.5", "sqft", "predict", "x" * rng.randrange(50)])
    if kind == 5:
        return rng.choice([*inputs_mod.PAYLOAD_KEYS, "method", "columns", "data", *NAMES])
    if kind in (6, 7):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = [*inputs_mod.PAYLOAD_KEYS, "method", "columns", "data", "index", *NAMES, "zzz"]
    return {
        str(_random_value(rng, 4)) if rng.random() < 0.2 else rng.choice(keys): _random_value(
            rng, depth + 1
        )
        for _ in range(rng.randrange(4))
    }


def _mutate(rng: random.Random, value: Any) -> Any:
    """Replace one random node of a valid body, to reach deep into the validators."""
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return [*value[:i], _mutate(rng, value[i]), *value[i + 1 :]]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        k = rng.choice(list(value))
        return {**value, k: _mutate(rng, value[k])}
    return _random_value(rng, 2)


def test_fuzz_only_domain_errors_escape() -> None:
    rng = random.Random(20240601)
    plans = [
        NAMED,
        UNKNOWN,
        plan({"n_features": 1}),
        plan({"feature_names": NAMES}, needs_dataframe=True, max_rows=3),
        plan(
            {
                "inputs": [
                    {"name": "c", "type": "string"},
                    {"name": "b", "type": "boolean"},
                    {"name": "n", "type": "long"},
                ]
            }
        ),
    ]
    seeds = list(SAME_DATA.values())
    outcomes = {"ok": 0, "malformed": 0, "invalid": 0}
    for i in range(400):
        if i < 200:
            value = _random_value(rng)
            if rng.random() < 0.5:  # wrap in an envelope so most reach the payload decoders
                value = {rng.choice(inputs_mod.PAYLOAD_KEYS): value}
        else:
            value = _mutate(rng, rng.choice(seeds))
        body = orjson.dumps(value)
        p = plans[i % len(plans)]
        try:
            out = decode_predict_body(body, p)
        except MalformedRequest:
            outcomes["malformed"] += 1
        except InvalidInput as err:
            outcomes["invalid"] += 1
            assert err.errors and len(err.errors) <= MAX_REPORTED_ERRORS
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in err.errors.items())
        else:
            outcomes["ok"] += 1
            assert 1 <= out.n_rows <= p.max_rows and out.X.shape[0] == out.n_rows
            if isinstance(out.X, np.ndarray):
                assert out.X.dtype == np.float64 and out.X.ndim == 2 and out.X.flags.c_contiguous
                assert np.isfinite(out.X).all()
    assert outcomes["ok"] and outcomes["invalid"] and outcomes["malformed"], outcomes


# ---- missing values (signature.allow_missing) ------------------------------------------------

MISSING_OK = plan({"feature_names": NAMES, "allow_missing": True})


def test_missing_values_are_refused_unless_the_signature_allows_them() -> None:
    err = invalid({"instances": [[1.0, None, 3.0]]})
    assert err.errors == {"instances[0].age": inputs_mod.MISSING_REFUSED}
    with pytest.raises(InvalidInput):
        rows_to_matrix([[1.0, np.nan, 3.0]], NAMED, "inputs")


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [[1.0, None, 3.0]]},
        {"instances": [{"sqft": 1, "age": None, "rooms": 3}]},
        {"inputs": {"sqft": [1.0], "age": [None], "rooms": [3]}},
        {"dataframe_split": {"columns": ["rooms", "sqft", "age"], "data": [[3, 1, None]]}},
    ],
)
def test_missing_values_become_nan_where_allowed(body: dict[str, Any]) -> None:
    X = decode(body, MISSING_OK).X
    assert X.shape == (1, 3) and X[0, 0] == 1.0 and np.isnan(X[0, 1]) and X[0, 2] == 3.0


def test_nan_from_another_protocol_is_missing_but_infinity_never_is() -> None:
    X = rows_to_matrix([[np.nan, 1.0, 2.0]], MISSING_OK, "inputs")
    assert np.isnan(X[0, 0])
    with pytest.raises(InvalidInput) as info:
        rows_to_matrix([[np.inf, 1.0, 2.0]], MISSING_OK, "inputs")
    assert info.value.errors == {"inputs[0].sqft": "expected a finite number"}


def test_missing_values_in_typed_columns() -> None:
    typed = plan(
        {
            "inputs": [
                {"name": "n", "type": "double"},
                {"name": "s", "type": "string"},
                {"name": "b", "type": "boolean"},
            ],
            "allow_missing": True,
        }
    )
    frame = decode({"instances": [[None, None, True], [1.5, "x", False]]}, typed).X
    assert np.isnan(frame["n"][0]) and frame["n"][1] == 1.5
    assert pd.isna(frame["s"][0]) and frame["s"][1] == "x"
    err = invalid({"instances": [[1.0, "x", None]]}, typed)
    assert err.errors == {
        "instances[0].b": "missing value (null): a boolean column cannot hold one"
    }


def test_allow_missing_must_be_a_boolean() -> None:
    with pytest.raises(ValueError, match="allow_missing"):
        plan({"n_features": 1, "allow_missing": "yes"})
