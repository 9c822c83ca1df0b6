"""The Python read of XGBoost and LightGBM files that comes before their libraries: every
inconsistency is refused with its reason, before any C++ parser sees the bytes."""

from __future__ import annotations

import re
import struct

import orjson
import pytest

from serving.boosters import ubjson
from serving.boosters.files import NotAModelFile, read_lightgbm, read_xgboost
from tests.boosters import file_bytes, model_for

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def xgb_document():
    return orjson.loads(file_bytes("xgboost", model_for("xgboost", "regressor")))


@pytest.fixture(scope="module")
def lgb_text():
    return file_bytes("lightgbm", model_for("lightgbm", "regressor")).decode()


def _tree(document):
    return document["learner"]["gradient_booster"]["model"]["trees"][0]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: t.update(split_indices=[99] * len(t["split_indices"])), "feature out of range"),
        (lambda t: t["left_children"].__setitem__(0, 500), "child index is out of range"),
        (lambda t: t["right_children"].pop(), "differ in length"),
        (lambda t: t["left_children"].__setitem__(0, -1), "one child"),
    ],
)
def test_an_inconsistent_xgboost_tree_is_refused(xgb_document, change, reason):
    document = orjson.loads(orjson.dumps(xgb_document))
    change(_tree(document))
    with pytest.raises(NotAModelFile, match=reason):
        read_xgboost(orjson.dumps(document))


def test_a_json_file_of_another_kind_is_refused_by_name():
    with pytest.raises(NotAModelFile) as refused:
        read_xgboost(b'{"learner": {"gradient_booster": {}}}')
    assert refused.value.errors == {"artifact": "not a xgboost model (no XGBoost model in it "
                                    "(missing 'learner_model_param'))"}  # fmt: skip


def test_ubjson_lengths_are_checked_against_the_bytes_present():
    # An array announcing 2**40 float32 values in a 20-byte file: refused, not allocated.
    huge = b"[$d#L" + struct.pack(">q", 2**40) + b"\x00" * 8
    with pytest.raises(ubjson.UbjsonError, match="truncated"):
        ubjson.loads(huge)
    with pytest.raises(ubjson.UbjsonError, match="after the document"):
        ubjson.loads(b"{}" + b"x")
    assert ubjson.loads(b"{i\x01aSi\x02hi}") == {"a": "hi"}


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("left_child=", "left_child=40", "points outside the tree"),
        ("split_feature=", "split_feature=77", "feature out of range"),
        ("leaf_value=", "leaf_value=nan", "not finite"),
        ("num_leaves=", "num_leaves=9", "has"),
        ("Tree=1\n", "Tree=7\n", "out of order"),
        ("is_linear=0", "is_linear=1", "linear tree"),
        ("end of parameters", "end of param", "end of parameters"),
    ],
)
def test_an_inconsistent_lightgbm_file_is_refused(lgb_text, old, new, reason):
    assert old in lgb_text
    if old.endswith("="):  # the first value of that array
        changed = re.sub(re.escape(old) + r"\S+", new, lgb_text, count=1)
    else:
        changed = lgb_text.replace(old, new, 1)
    with pytest.raises(NotAModelFile, match=reason):
        read_lightgbm(changed.encode())


def test_lightgbm_is_given_only_what_was_read(lgb_text):
    described = read_lightgbm(lgb_text.encode())
    assert described.model_text.endswith("end of trees\n")
    assert "parameters:" not in described.model_text
    assert len(described.trees) == lgb_text.count("\nTree=")
