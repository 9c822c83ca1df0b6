"""serving.numeric_body: the simdjson decoder of large `{"instances": [[...], ...]}` bodies.

It must give exactly the matrix the general decoder gives, and decline (None) every body that
the general decoder rejects or reads differently, so that errors keep their wording.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.errors import InvalidInput, MalformedRequest
from serving import inputs as inputs_mod
from serving import numeric_body
from serving.inputs import build_input_plan, decode_predict_body
from serving.numeric_body import _ParserPool, parse_instances


@pytest.fixture
def any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let small bodies through, so that each case can be written out in full."""
    monkeypatch.setattr(numeric_body, "MIN_BODY_BYTES", 0)


def general(body: bytes, width: int | None = None, max_rows: int = 1_000) -> Any:
    """What the general (orjson) decoder makes of a body: a matrix or the exception."""
    plan = build_input_plan(
        {"n_features": width} if width else None, max_rows=max_rows, methods=["predict"]
    )
    saved = inputs_mod.parse_instances
    inputs_mod.parse_instances = lambda *_: None
    try:
        return decode_predict_body(body, plan).X
    except (InvalidInput, MalformedRequest) as exc:
        return exc
    finally:
        inputs_mod.parse_instances = saved


def test_large_body_decodes_to_the_exact_matrix() -> None:
    X = np.random.default_rng(7).normal(size=(2_000, 8)) * 10.0 ** np.arange(-4, 4)
    X[0, :4] = [0.0, -0.0, 1e-300, 12345678901]
    body = orjson.dumps({"instances": X}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert len(body) > numeric_body.MIN_BODY_BYTES
    got = parse_instances(body, 8, 100_000)
    assert got is not None
    assert got.dtype == np.float64 and got.shape == (2_000, 8)
    assert got.flags.c_contiguous and got.flags.writeable  # models may work in place
    assert got.tobytes() == X.tobytes()  # bit for bit, signed zero included
    assert np.array_equal(got, general(body, 8, 100_000))


def test_small_bodies_are_left_to_orjson() -> None:
    assert parse_instances(b'{"instances": [[1, 2]]}', 2, 10) is None


@pytest.mark.usefixtures("any_size")
@pytest.mark.parametrize(
    ("body", "width", "expected"),
    [
        (b'{"instances": [[1, 2], [3, 4]]}', 2, [[1, 2], [3, 4]]),
        (b'{"instances": [[1, 2], [3, 4]]}', None, [[1, 2], [3, 4]]),
        (b' {\n "instances" :[[1.5e3,-2E-2],\t[0,-0]] }\n', 2, [[1500, -0.02], [0, 0]]),
        (b'{"inputs": [[1, 2], [3, 4]]}', 2, [[1, 2], [3, 4]]),
        (b'{"instances": [[18446744073709551615, -9223372036854775808]]}', 2, [[2**64, -(2**63)]]),
    ],
)
def test_accepts_rows_of_numbers(body: bytes, width: int | None, expected: list) -> None:
    got = parse_instances(body, width, 10)
    assert got is not None
    assert np.array_equal(got, np.array(expected, dtype=np.float64))
    assert np.array_equal(got, general(body, width))


DECLINED = {
    "utf-8 byte order mark": b'\xef\xbb\xbf{"instances": [[1, 2]]}',
    "escaped key": b'{"\\u0069nstances": [[1, 2]]}',
    "not json": b'{"instances": [[1, 2]',
    "trailing content": b'{"instances": [[1, 2]]} x',
    "not an object": b"[[1, 2]]",
    "another envelope": b'{"dataframe_split": {"data": [[1, 2]]}}',
    "columns": b'{"inputs": {"a": [1, 2], "b": [3, 4]}}',
    "both keys": b'{"instances": [[1, 2]], "inputs": [[1, 2]]}',
    "a method key": b'{"instances": [[1, 2]], "method": "predict"}',
    "duplicate key": b'{"instances": [[9, 9]], "instances": [[1, 2]]}',
    "instances not a list": b'{"instances": {"a": 1}}',
    "no rows": b'{"instances": []}',
    "empty rows": b'{"instances": [[], []]}',
    "flat list": b'{"instances": [1, 2]}',
    "ragged rows": b'{"instances": [[1, 2, 3], [4]]}',
    "nested array": b'{"instances": [[1, [2]], [3, 4]]}',
    "nested empty array": b'{"instances": [[1, []], [2, [3, 4]]]}',
    "a string": b'{"instances": [[1, "2"], [3, 4]]}',
    "a string row": b'{"instances": ["ab", [3, 4]]}',
    "a boolean": b'{"instances": [[1, true], [3, 4]]}',
    "null": b'{"instances": [[1, null], [3, 4]]}',
    "an object row": b'{"instances": [{"a": 1, "b": 2}, [3, 4]]}',
    "an object value": b'{"instances": [[1, {}], [3, 4]]}',
    "NaN": b'{"instances": [[NaN, 1], [3, 4]]}',
    "overflowing float": b'{"instances": [[1e400, 1], [3, 4]]}',
    "65-bit integer": b'{"instances": [[123456789012345678901234, 1], [3, 4]]}',
    "leading zero": b'{"instances": [[01, 1], [3, 4]]}',
    "invalid utf-8 in the key": b'{"inst\xffances": [[1, 2], [3, 4]]}',
}


@pytest.mark.usefixtures("any_size")
@pytest.mark.parametrize("body", DECLINED.values(), ids=DECLINED.keys())
def test_declines_what_it_cannot_prove(body: bytes) -> None:
    assert parse_instances(body, None, 10) is None


@pytest.mark.usefixtures("any_size")
def test_declines_a_wrong_width_or_too_many_rows() -> None:
    body = b'{"instances": [[1, 2], [3, 4]]}'
    assert parse_instances(body, 3, 10) is None
    assert parse_instances(body, 2, 1) is None
    assert parse_instances(body, 2, 2) is not None


@pytest.mark.usefixtures("any_size")
@pytest.mark.parametrize("body", DECLINED.values(), ids=DECLINED.keys())
def test_errors_are_worded_as_before(body: bytes) -> None:
    """A declined body reaches the general decoder: same answer, same wording."""
    plan = build_input_plan({"n_features": 2}, max_rows=10, methods=["predict"])
    try:
        got: Any = decode_predict_body(body, plan).X
    except (InvalidInput, MalformedRequest) as exc:
        got = exc
    expected = general(body, 2, 10)
    if isinstance(expected, Exception):
        assert type(got) is type(expected) and str(got) == str(expected)
    else:  # e.g. a duplicate key: orjson keeps the last one
        assert np.array_equal(got, expected)


@pytest.mark.usefixtures("any_size")
def test_a_parser_is_reusable_after_a_declined_body() -> None:
    pool = _ParserPool(1)
    parser = pool.take()
    assert parser is not None and pool.take() is None  # the pool never makes more
    pool.give_back(parser)
    assert pool.take() is parser
    pool.give_back(parser)
    for body in DECLINED.values():
        numeric_body._parse_with(pool, body, None, 10)  # most raise inside: declined
        assert numeric_body._parse_with(pool, b'{"instances": [[1, 2]]}', 2, 10) is not None


def test_a_busy_pool_declines() -> None:
    pool = _ParserPool(1)
    held = pool.take()
    body = orjson.dumps({"instances": [[1.0, 2.0]] * 2_000})
    assert numeric_body._parse_with(pool, body, 2, 10_000) is None
    pool.give_back(held)
    assert numeric_body._parse_with(pool, body, 2, 10_000) is not None


def test_concurrent_requests_get_their_own_rows() -> None:
    bodies = {k: np.random.default_rng(k).normal(size=(500 + 37 * k, 6)) for k in range(12)}
    encoded = {
        k: orjson.dumps({"instances": X}, option=orjson.OPT_SERIALIZE_NUMPY)
        for k, X in bodies.items()
    }
    plan = build_input_plan({"n_features": 6}, max_rows=10_000, methods=["predict"])
    failures: list[str] = []

    def client(k: int) -> None:
        for _ in range(30):
            X = decode_predict_body(encoded[k], plan).X
            if X.tobytes() != bodies[k].tobytes():
                failures.append(f"client {k} got another matrix")

    threads = [threading.Thread(target=client, args=(k,)) for k in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
spaces = st.sampled_from(["", " ", "\n", "\t ", "  "])


@st.composite
def instance_bodies(draw: st.DrawFn) -> bytes:
    """Mostly well-formed bodies, with the odd wrong row, value or wrapper."""
    width = draw(st.integers(1, 4))
    rows: list[Any] = draw(
        st.lists(st.lists(numbers, min_size=width, max_size=width), min_size=1, max_size=6)
    )
    if draw(st.booleans()):
        i = draw(st.integers(0, len(rows) - 1))
        rows[i] = draw(
            st.one_of(
                st.lists(numbers, max_size=5),
                st.just([[1.0] * width]),
                st.just([True] * width),
                st.just([None] * width),
                st.just("x" * width),
                numbers,
                st.just({str(j): 1 for j in range(width)}),
            )
        )
    sep, pad = draw(spaces), draw(spaces)
    text = json.dumps(rows).replace(",", "," + sep)  # stdlib: writes 65-bit integers too
    key = draw(st.sampled_from(['"instances"', '"inputs"', '"\\u0069nstances"']))
    extra = draw(st.sampled_from(["", ', "method": "predict"', ', "instances": [[0]]']))
    return f"{pad}{{{pad}{key}{pad}:{pad}{text}{extra}}}{pad}".encode()


@settings(max_examples=400, deadline=None)
@given(body=instance_bodies(), width=st.sampled_from([None, 1, 2, 3, 4]))
def test_never_disagrees_with_the_general_decoder(body: bytes, width: int | None) -> None:
    saved = numeric_body.MIN_BODY_BYTES
    numeric_body.MIN_BODY_BYTES = 0
    try:
        got = parse_instances(body, width, 5)
    finally:
        numeric_body.MIN_BODY_BYTES = saved
    if got is None:
        return  # declined: the general decoder answers, as it always did
    expected = general(body, width, 5)
    assert isinstance(expected, np.ndarray), f"accepted a body the decoder rejects: {expected}"
    assert got.tobytes() == expected.tobytes() and got.shape == expected.shape


def test_other_bodies_are_not_parsed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Named rows, dataframe_split...: orjson's alone, without a simdjson pass first."""

    def must_not_parse(*_: Any) -> None:
        raise AssertionError("parsed by simdjson")

    monkeypatch.setattr(numeric_body, "_parse_with", must_not_parse)
    rows = [{"a": 1.0, "b": 2.0}] * 2_000
    for body in (
        orjson.dumps({"instances": rows}),
        orjson.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]] * 2_000}}),
        orjson.dumps({"inputs": {"a": [1.0] * 3_000, "b": [2.0] * 3_000}}),
    ):
        assert len(body) > numeric_body.MIN_BODY_BYTES
        assert parse_instances(body, 2, 10_000) is None


def test_bodies_beyond_the_parser_capacity_go_to_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    body = orjson.dumps({"instances": [[1.0, 2.0]] * 5_000})
    assert parse_instances(body, 2, 10_000) is not None
    monkeypatch.setattr(numeric_body, "MAX_BODY_BYTES", len(body) - 1)
    assert parse_instances(body, 2, 10_000) is None
    plan = build_input_plan({"n_features": 2}, max_rows=10_000, methods=["predict"])
    assert decode_predict_body(body, plan).X.shape == (5_000, 2)


def test_a_parser_refuses_documents_over_its_capacity() -> None:
    body = orjson.dumps({"instances": [[1.0, 2.0]] * 5_000})
    pool = _ParserPool(1)
    original = numeric_body.MAX_BODY_BYTES
    try:
        numeric_body.MAX_BODY_BYTES = 1_024  # the capacity the pool's parser is made with
        assert numeric_body._parse_with(pool, body, 2, 10_000) is None
    finally:
        numeric_body.MAX_BODY_BYTES = original
