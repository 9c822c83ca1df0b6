"""Reading XGBoost and LightGBM model files in Python, strictly, before their libraries do.

A file that is not a whole model of its format (another file renamed, a truncated upload, a
tree whose arrays disagree) is refused here with the reason, so that the libraries' C++
parsers only ever see files whose structure is known to be sound (LightGBM's parser aborts the
process on some truncated files; XGBoost's allocates what a corrupt length asks for). What is
read is kept: it describes the trees for their conversion (plans.py).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from registry.errors import InvalidInput
from serving.boosters.ubjson import UbjsonError
from serving.boosters.ubjson import loads as ubjson_loads

MAX_TREES = 100_000
MAX_FEATURES = 100_000


class NotAModelFile(InvalidInput):
    """The bytes are not a (whole) model file of the format."""

    def __init__(self, fmt: str, reason: str) -> None:
        super().__init__(
            f"the artifact is not a valid {fmt} model file: {reason}",
            {"artifact": f"not a {fmt} model ({reason})"},
        )


@dataclass(frozen=True)
class XgbTree:
    left: np.ndarray  # -1 at leaves
    right: np.ndarray
    feature: np.ndarray
    condition: np.ndarray  # float32: the split value, or the leaf's value at a leaf
    default_left: np.ndarray  # where a missing value goes
    categorical: np.ndarray
    leaf_vector: int  # outputs per leaf (1 unless multi-target)


@dataclass(frozen=True)
class XgbFile:
    booster: str  # gbtree, dart or gblinear
    objective: str
    num_feature: int
    num_class: int
    num_target: int
    base_score: list[float]
    feature_names: list[str] | None
    feature_types: list[str] | None
    trees: list[XgbTree] = field(default_factory=list)
    tree_info: list[int] = field(default_factory=list)  # the output group of each tree
    iteration_indptr: list[int] = field(default_factory=list)
    best_iteration: int | None = None
    sklearn_type: str | None = None  # "classifier" / "regressor" when a wrapper saved it


@dataclass(frozen=True)
class LgbTree:
    num_leaves: int
    split_feature: np.ndarray
    threshold: np.ndarray  # float64
    decision_type: np.ndarray  # bit 0 categorical, bit 1 default left, bits 2-3 missing type
    left_child: np.ndarray  # >= 0 an internal node, < 0 the leaf ~value
    right_child: np.ndarray
    leaf_value: np.ndarray
    num_cat: int
    is_linear: bool


@dataclass(frozen=True)
class LgbFile:
    objective: str  # as written: "binary sigmoid:1", "multiclass num_class:3", ...
    num_class: int
    num_tree_per_iteration: int
    max_feature_idx: int
    average_output: bool
    feature_names: list[str]
    trees: list[LgbTree]
    # What LightGBM is given to load: the header and the trees that were read here, and not
    # the importances and training parameters after them (a truncated parameters section
    # crashes LightGBM's parser; prediction needs none of it).
    model_text: str = ""


# ---- XGBoost ------------------------------------------------------------------------------

# The second byte of a UBJSON object (a key's length marker, or a container's type or count);
# JSON has a quote, a brace or white space there.
_UBJ_STARTS = frozenset({b"$", b"#", b"i", b"U", b"I", b"l", b"L"})


def read_xgboost(data: bytes) -> XgbFile:
    """A JSON or UBJSON XGBoost model, read and checked."""
    head = data.lstrip()[:2]
    if head[:1] != b"{":
        raise NotAModelFile("xgboost", "neither JSON nor UBJSON")
    try:
        document = None if head[1:2] in _UBJ_STARTS else orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise NotAModelFile("xgboost", f"broken JSON ({str(error)[:120]})") from None
    if document is None:
        try:
            document = ubjson_loads(data)
        except (UbjsonError, KeyError, struct.error) as error:
            raise NotAModelFile("xgboost", f"broken UBJSON ({str(error)[:120]})") from None
    try:
        return _xgb_file(document)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise NotAModelFile("xgboost", f"no XGBoost model in it ({_say(error)})") from None


def _say(error: BaseException) -> str:
    if isinstance(error, KeyError):
        return f"missing {error.args[0]!r}"
    return str(error)[:160] or type(error).__name__


def _ints(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iub"):
        raise ValueError(f"{name} must be a list of integers")
    return array.astype(np.int64)


def _floats(values: Any, name: str, dtype: type = np.float32) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iuf"):
        raise ValueError(f"{name} must be a list of numbers")
    return array.astype(dtype)


def _scores(text: str) -> list[float]:
    """base_score: "0.5" before XGBoost 3, "[5E-1]" (one per target or class) since."""
    values = [float(v) for v in str(text).strip("[] ").split(",") if v.strip()]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError("base_score is not a list of finite numbers")
    return values


def _xgb_file(document: Any) -> XgbFile:
    learner = document["learner"]
    params = learner["learner_model_param"]
    num_feature = int(params["num_feature"])
    if not 1 <= num_feature <= MAX_FEATURES:
        raise ValueError(f"num_feature {num_feature} is out of range")
    booster = learner["gradient_booster"]
    kind = str(booster["name"])
    if kind not in ("gbtree", "dart", "gblinear"):
        raise ValueError(f"unknown booster {kind!r}")
    names = learner.get("feature_names") or None
    types = learner.get("feature_types") or None
    for label, values in (("feature_names", names), ("feature_types", types)):
        if values is not None and len(values) != num_feature:
            raise ValueError(f"{label} has {len(values)} entries for {num_feature} features")
    attributes = learner.get("attributes") or {}
    best = attributes.get("best_iteration")
    sklearn_type = None
    if "scikit_learn" in attributes:
        sklearn_type = orjson.loads(attributes["scikit_learn"]).get("_estimator_type")
    trees: list[XgbTree] = []
    tree_info: list[int] = []
    indptr: list[int] = []
    if kind != "gblinear":
        model = booster["model"] if kind == "gbtree" else booster["gbtree"]["model"]
        raw_trees = model["trees"]
        if len(raw_trees) > MAX_TREES:
            raise ValueError(f"more than {MAX_TREES} trees")
        trees = [_xgb_tree(tree, num_feature) for tree in raw_trees]
        tree_info = [int(v) for v in model["tree_info"]]
        if len(tree_info) != len(trees):
            raise ValueError("tree_info does not have one entry per tree")
        indptr = [int(v) for v in model.get("iteration_indptr", [])]
        if indptr and (indptr[0] != 0 or indptr[-1] != len(trees) or indptr != sorted(indptr)):
            raise ValueError("iteration_indptr does not cover the trees")
    return XgbFile(
        booster=kind,
        objective=str(learner["objective"]["name"]),
        num_feature=num_feature,
        num_class=int(params.get("num_class", 0)),
        num_target=int(params.get("num_target", 1)),
        base_score=_scores(params["base_score"]),
        feature_names=[str(n) for n in names] if names else None,
        feature_types=[str(t) for t in types] if types else None,
        trees=trees,
        tree_info=tree_info,
        iteration_indptr=indptr,
        best_iteration=int(best) if best is not None else None,
        sklearn_type=str(sklearn_type) if sklearn_type else None,
    )


def _xgb_tree(tree: Any, num_feature: int) -> XgbTree:
    left = _ints(tree["left_children"], "left_children")
    right = _ints(tree["right_children"], "right_children")
    feature = _ints(tree["split_indices"], "split_indices")
    condition = _floats(tree["split_conditions"], "split_conditions")
    default_left = _ints(tree["default_left"], "default_left").astype(bool)
    split_type = tree.get("split_type")
    categorical = (
        _ints(split_type, "split_type").astype(bool)
        if split_type is not None and len(split_type)
        else np.zeros(len(left), dtype=bool)
    )
    n = len(left)
    if n == 0 or any(len(a) != n for a in (right, feature, condition, default_left, categorical)):
        raise ValueError("a tree's node arrays differ in length")
    internal = left >= 0
    if np.any((right >= 0) != internal):
        raise ValueError("a node has one child")
    children = np.concatenate([left[internal], right[internal]])
    if children.size and (children.min() < 1 or children.max() >= n):
        raise ValueError("a child index is out of range")
    if len(np.unique(children)) != children.size:
        raise ValueError("a node has two parents")
    if np.any(feature[internal] < 0) or np.any(feature[internal] >= num_feature):
        raise ValueError("a split names a feature out of range")
    leaf_vector = int(tree.get("tree_param", {}).get("size_leaf_vector", 1) or 1)
    return XgbTree(left, right, feature, condition, default_left, categorical, leaf_vector)


# ---- LightGBM -----------------------------------------------------------------------------

_LGB_ARRAYS = ("split_feature", "threshold", "decision_type", "left_child", "right_child")


def read_lightgbm(data: bytes) -> LgbFile:
    """A LightGBM text model, read and checked."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotAModelFile("lightgbm", "not text (UTF-8)") from None
    text = text.replace("\r\n", "\n")
    if not text.startswith("tree\n"):
        raise NotAModelFile("lightgbm", "a LightGBM text model starts with 'tree'")
    end = text.find("\nend of trees")
    if end < 0:
        raise NotAModelFile("lightgbm", "truncated: no 'end of trees'")
    _check_trailer(text[end + len("\nend of trees") :])
    try:
        described = _lgb_file(text[:end])
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise NotAModelFile("lightgbm", _say(error)) from None
    return dataclasses.replace(described, model_text=text[:end] + "\nend of trees\n")


def _check_trailer(trailer: str) -> None:
    """What LightGBM writes after the trees (importances, parameters, pandas categories) must
    be whole too: a file cut anywhere is a truncated upload, even where the trees survived."""
    if "parameters:" in trailer and "\nend of parameters" not in trailer:
        raise NotAModelFile("lightgbm", "truncated: no 'end of parameters'")
    last = trailer.rstrip("\n").rpartition("\n")[2]
    if last.startswith("pandas_categorical:"):
        try:
            orjson.loads(last[len("pandas_categorical:") :])
        except orjson.JSONDecodeError:
            raise NotAModelFile("lightgbm", "truncated: pandas_categorical is cut") from None
    elif "end of parameters" in trailer:
        raise NotAModelFile("lightgbm", "truncated: no pandas_categorical after the parameters")


def _fields(block: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in block.split("\n"):
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = value.strip()
        elif line.strip():
            found[line.strip()] = ""
    return found


def _numbers(text: str, kind: type, name: str) -> np.ndarray:
    try:
        return np.array([kind(v) for v in text.split()], dtype=kind)
    except (ValueError, OverflowError):
        raise ValueError(f"{name} holds something that is not a number") from None


def _lgb_file(text: str) -> LgbFile:
    header, *blocks = text.split("\nTree=")
    head = _fields(header)
    max_feature_idx = int(head["max_feature_idx"])
    if not 0 <= max_feature_idx < MAX_FEATURES:
        raise ValueError(f"max_feature_idx {max_feature_idx} is out of range")
    sizes = head.get("tree_sizes", "").split()
    if len(sizes) != len(blocks):
        raise ValueError(f"truncated: {len(blocks)} trees of the {len(sizes)} announced")
    if not blocks or len(blocks) > MAX_TREES:
        raise ValueError("no trees" if not blocks else f"more than {MAX_TREES} trees")
    num_class = int(head.get("num_class", 1))
    per_iteration = int(head.get("num_tree_per_iteration", 1))
    if num_class < 1 or per_iteration < 1 or len(blocks) % per_iteration:
        raise ValueError("the tree count does not match num_tree_per_iteration")
    trees = []
    for index, block in enumerate(blocks):
        number, _, body = block.partition("\n")
        if number.strip() != str(index):
            raise ValueError(f"tree {index} is missing or out of order")
        trees.append(_lgb_tree(_fields(body), max_feature_idx, index))
    names = head.get("feature_names", "").split()
    if len(names) != max_feature_idx + 1:
        raise ValueError("feature_names does not name every feature")
    return LgbFile(
        objective=head.get("objective", "regression"),
        num_class=num_class,
        num_tree_per_iteration=per_iteration,
        max_feature_idx=max_feature_idx,
        average_output="average_output" in head,
        feature_names=names,
        trees=trees,
    )


def _lgb_tree(fields: dict[str, str], max_feature_idx: int, index: int) -> LgbTree:
    leaves = int(fields["num_leaves"])
    if leaves < 1:
        raise ValueError(f"tree {index} has no leaves")
    leaf_value = _numbers(fields["leaf_value"], float, "leaf_value")
    if len(leaf_value) != leaves:
        raise ValueError(f"tree {index}: leaf_value has {len(leaf_value)} of {leaves} values")
    if not np.all(np.isfinite(leaf_value)):
        raise ValueError(f"tree {index}: a leaf value is not finite")
    num_cat = int(fields.get("num_cat", 0))
    is_linear = fields.get("is_linear", "0") == "1"
    if is_linear:
        raise ValueError(f"tree {index} is a linear tree (linear_tree=true is not supported)")
    if leaves == 1:
        empty = np.zeros(0, dtype=np.int64)
        return LgbTree(1, empty, np.zeros(0), empty, empty, empty, leaf_value, num_cat, False)
    arrays = {}
    for name in _LGB_ARRAYS:
        kind = float if name == "threshold" else int
        arrays[name] = _numbers(fields[name], kind, name)
        if len(arrays[name]) != leaves - 1:
            raise ValueError(f"tree {index}: {name} has {len(arrays[name])} of {leaves - 1}")
    for side in ("left_child", "right_child"):
        child = arrays[side]
        if np.any(child >= leaves - 1) or np.any(child < -leaves):
            raise ValueError(f"tree {index}: {side} points outside the tree")
    nodes = np.concatenate([arrays["left_child"], arrays["right_child"]])
    if len(np.unique(nodes)) != nodes.size or 0 in nodes:
        raise ValueError(f"tree {index}: a node has two parents")
    features = arrays["split_feature"]
    if np.any(features < 0) or np.any(features > max_feature_idx):
        raise ValueError(f"tree {index}: a split names a feature out of range")
    decision = arrays["decision_type"]
    if np.any(decision < 0) or np.any(decision > 15):
        raise ValueError(f"tree {index}: unknown decision_type")
    if (decision & 1).any():
        cats = _numbers(fields.get("cat_boundaries", ""), int, "cat_boundaries")
        if num_cat < 1 or len(cats) != num_cat + 1:
            raise ValueError(f"tree {index}: categorical splits without their categories")
    return LgbTree(
        num_leaves=leaves,
        split_feature=features,
        threshold=arrays["threshold"],
        decision_type=decision,
        left_child=arrays["left_child"],
        right_child=arrays["right_child"],
        leaf_value=leaf_value,
        num_cat=num_cat,
        is_linear=False,
    )
