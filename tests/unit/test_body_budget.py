"""serving.body_budget: bodies far over the row limit are refused before they are parsed, and
no body a request within the limits can send is ever refused by it."""

from __future__ import annotations

import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.errors import InvalidInput
from serving import body_budget
from serving.body_budget import Budget, enforce
from serving.inputs import build_input_plan, decode_predict_body
from serving.v2_codec import decode_request

MAX_ROWS = 1_000
ONE = build_input_plan(
    {"n_features": 1, "feature_names": ["x"]}, max_rows=MAX_ROWS, methods=["predict"]
)
WIDE = build_input_plan({"n_features": 8}, max_rows=MAX_ROWS, methods=["predict"])
UNKNOWN = build_input_plan(None, max_rows=MAX_ROWS, methods=["predict"])
TEXT = build_input_plan(
    {"inputs": [{"name": "t", "type": "string"}, {"name": "n", "type": "double"}]},
    max_rows=MAX_ROWS,
    methods=["predict"],
)


def _repeat(head: bytes, item: bytes, count: int, tail: bytes) -> bytes:
    return head + b",".join([item] * count) + tail


# A few MiB each: far more rows than MAX_ROWS, in every form a predict body can take.
OVER = 500_000
NATIVE_BODIES = {
    "inputs rows": _repeat(b'{"inputs": [', b"[1]", OVER, b"]}"),
    "instances rows": _repeat(b'{"instances": [', b"[1.5]", OVER, b"]}"),
    "instances flat": _repeat(b'{"instances": [', b"1", OVER, b"]}"),
    "instances empty rows": _repeat(b'{"instances": [', b"[]", OVER, b"]}"),
    "records": _repeat(b'{"dataframe_records": [', b'{"x":1}', OVER, b"]}"),
    "split": _repeat(b'{"dataframe_split": {"columns": ["x"], "data": [', b"[1]", OVER, b"]}}"),
    "split index": _repeat(b'{"dataframe_split": {"data": [[1]], "index": [', b"[0]", OVER, b"]}}"),
    "columns": _repeat(b'{"inputs": {"x": [', b"1", OVER, b"]}}"),
    "unknown key": _repeat(b'{"instances": [[1]], "other": [', b"{}", OVER, b"]}"),
    "method after rows": _repeat(b'{"inputs": [', b"[1]", OVER, b'], "method": "predict"}'),
}


def _refused(call: Any, body: bytes) -> tuple[InvalidInput, int]:
    """The error a body is refused with, and the peak memory the refusal took."""
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return info.value, peak


@pytest.mark.parametrize("form", list(NATIVE_BODIES))
def test_a_body_far_over_the_row_limit_is_refused_before_it_is_parsed(form):
    body = NATIVE_BODIES[form]
    error, peak = _refused(lambda: decode_predict_body(body, ONE), body)
    assert f"the limit is {MAX_ROWS} rows" in error.detail, error.detail
    assert "too many" in error.detail and error.errors == {"body": error.detail}
    # No Python object per row: the count works in fixed-size pieces.
    assert peak < len(body) // 4 + 2**20, (peak, len(body))


@pytest.mark.parametrize("plan", [ONE, WIDE, UNKNOWN], ids=["one", "wide", "unknown"])
def test_too_many_rows_are_refused_whatever_the_width(plan):
    body = NATIVE_BODIES["inputs rows"]
    error, _ = _refused(lambda: decode_predict_body(body, plan), body)
    assert error.detail.startswith("too many rows")


def test_too_many_values_are_refused_when_the_width_is_known():
    # 100 rows, each far too wide: within the row limit, but 8 features x 1,000 rows at most.
    body = orjson.dumps({"instances": [[1] * 10_000] * 100})
    error, _ = _refused(lambda: decode_predict_body(body, WIDE), body)
    assert error.detail.startswith("too many values") and "1000 rows of 8 features" in (
        error.detail
    )
    # Without a known width, such rows are valid.
    assert decode_predict_body(body, UNKNOWN).X.shape == (100, 10_000)


def _v2(item: bytes, count: int, shape: bytes) -> bytes:
    head = b'{"inputs": [{"name": "input", "datatype": "FP64", "shape": ' + shape + b', "data": ['
    return _repeat(head, item, count, b"]}]}")


V2_BODIES = {
    "nested": _v2(b"[1]", OVER, b"[%d, 1]" % OVER),
    "flat": _v2(b"1", OVER, b"[%d, 1]" % OVER),
    "in parameters": _repeat(
        b'{"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 1], "data": [1]}], '
        b'"parameters": {"x": [',
        b"[]",
        OVER,
        b"]}}",
    ),
}


@pytest.mark.parametrize("form", list(V2_BODIES))
def test_a_v2_body_far_over_the_row_limit_is_refused_before_it_is_parsed(form):
    body = V2_BODIES[form]
    error, peak = _refused(lambda: decode_request(body, None, ONE.tensor_budget), body)
    assert f"the limit is {MAX_ROWS} rows" in error.detail, error.detail
    assert peak < len(body) // 4 + 2**20, (peak, len(body))


def test_only_the_json_header_of_a_binary_v2_request_is_counted():
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP64",
                    "shape": [MAX_ROWS, 1],
                    "parameters": {"binary_data_size": MAX_ROWS * 8},
                }
            ]
        }
    )
    raw = b"[{,[{,[{,[" * MAX_ROWS * 8  # binary data that looks like far too many rows
    request = decode_request(header + raw[: MAX_ROWS * 8], str(len(header)), ONE.tensor_budget)
    assert request.inputs[0].shape == (MAX_ROWS, 1)


# --------------------------------------------------------------------------- never too strict


def test_bodies_at_the_limit_are_accepted_in_every_form():
    rows = [[float(i)] for i in range(MAX_ROWS)]
    for body in (
        {"instances": rows},
        {"inputs": rows, "method": "predict"},
        {"instances": [r[0] for r in rows]},
        {"dataframe_records": [{"x": r[0]} for r in rows]},
        {"dataframe_split": {"columns": ["x"], "data": rows, "index": list(range(MAX_ROWS))}},
        # A MultiIndex comes out of pandas as one list per row.
        {
            "dataframe_split": {
                "columns": ["x"],
                "data": rows,
                "index": [[i, "a"] for i in range(MAX_ROWS)],
            }
        },
        {"inputs": {"x": [r[0] for r in rows]}},
    ):
        raw = orjson.dumps(body, option=orjson.OPT_INDENT_2)  # whitespace changes nothing
        assert len(raw) > ONE.body_budget.scan_above, "the count must actually run"
        assert decode_predict_body(raw, ONE).n_rows == MAX_ROWS
    wide = [[float(j) for j in range(8)] for _ in range(MAX_ROWS)]
    assert decode_predict_body(orjson.dumps({"instances": wide}), WIDE).n_rows == MAX_ROWS
    for form in ("rows", "columns"):
        body = orjson.dumps(
            {"instances": [[1.0] * 8] * (MAX_ROWS + 1)}
            if form == "rows"
            else {"inputs": {"x": [1.0] * (MAX_ROWS + 1)}}
        )
        with pytest.raises(InvalidInput, match="too many rows"):  # the exact limit still holds
            decode_predict_body(body, WIDE if form == "rows" else ONE)


def test_brackets_and_commas_inside_strings_do_not_count():
    text = 'a "quoted", [bracketed] {braced} \\ , , , [[[{{{'
    rows = [[text * 3, float(i)] for i in range(MAX_ROWS)]
    body = orjson.dumps({"instances": rows})
    assert body.count(b"[") > TEXT.body_budget.containers  # the raw counts are over
    assert body.count(b",") > TEXT.body_budget.commas
    decoded = decode_predict_body(body, TEXT)
    assert decoded.n_rows == MAX_ROWS and decoded.X["t"][0] == text * 3


def test_v2_bodies_at_the_limit_are_accepted():
    names = [f"f{j}" for j in range(8)]
    plan = build_input_plan(
        {"n_features": 8, "feature_names": names}, max_rows=MAX_ROWS, methods=["predict"]
    )
    per_feature = {
        "inputs": [
            {
                "name": n,
                "datatype": "FP64",
                "shape": [MAX_ROWS, 1],
                "data": [[float(i)] for i in range(MAX_ROWS)],
            }  # nested: a list per value
            for n in names
        ]
    }
    single = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP64",
                "shape": [MAX_ROWS, 8],
                "data": [[1.0] * 8] * MAX_ROWS,
            }
        ],
        "outputs": [{"name": "predict"}],
        "parameters": {"content_type": "np"},
    }
    for body in (per_feature, single):
        raw = orjson.dumps(body)
        assert len(raw) > plan.tensor_budget.scan_above
        decode_request(raw, None, plan.tensor_budget)


def test_an_unterminated_string_is_counted_in_linear_time():
    # Every quote after the first is escaped: a naive string pattern would rescan the rest
    # of the body from each of them.
    body = b'{"instances": [[' + b'"' + b'\\"[,' * 2_000_000 + b"]]}"
    budget = Budget(max_rows=10, containers=10, commas=10, what="rows")
    enforce(body, budget)  # inside the (never closed) string: nothing counts


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.text(alphabet='[]{},"\\ a', max_size=8), st.floats(-1e9, 1e9)),
        min_size=1,
        max_size=40,
    ),
    form=st.sampled_from(["instances", "records", "split", "columns"]),
)
def test_no_acceptable_body_is_ever_refused(rows, form):
    plan = build_input_plan(
        {"inputs": [{"name": "t", "type": "string"}, {"name": "n", "type": "double"}]},
        max_rows=len(rows),
        methods=["predict"],
    )
    as_lists = [list(r) for r in rows]
    body = orjson.dumps(
        {
            "instances": {"instances": as_lists},
            "records": {"dataframe_records": [{"t": t, "n": n} for t, n in rows]},
            "split": {"dataframe_split": {"columns": ["t", "n"], "data": as_lists}},
            "columns": {"inputs": {"t": [t for t, _ in rows], "n": [n for _, n in rows]}},
        }[form]
    )
    enforce(body, plan.body_budget)
    assert decode_predict_body(body, plan).n_rows == len(rows)


def test_small_bodies_are_not_counted(monkeypatch):
    def fail(*_):
        raise AssertionError("counted")

    monkeypatch.setattr(body_budget, "_count_raw", fail)
    decode_predict_body(b'{"instances": [[1.0]]}', ONE)
