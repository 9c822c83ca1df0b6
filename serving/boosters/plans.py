"""XGBoost and LightGBM trees as the float64 ONNX tree ensemble of serving/trees.py.

What each library computes, written out:
* XGBoost: features as float32, `x < split` goes left, a missing value goes where the node's
  `default_left` says; leaf values carry the learning rate; the margin is the base score
  (in margin space: logit for logistic objectives, log for log-link ones) plus the sum of
  each output group's trees; then the objective's link (sigmoid, softmax, exp).
* LightGBM: features as float64, `x <= threshold` goes left; a missing value goes the
  default way (missing type NaN), or is taken as 0.0 (missing type None); the first tree's
  leaves hold the initial score; random-forest mode averages; then the link.
Anything else (categorical splits, dart, multi-target leaves, objectives with other links)
is not written: the library serves it. What is written is verified against the library's
own predict before it is served (serving/accelerate.py).
"""

from __future__ import annotations

import math

import numpy as np

from serving.boosters.files import LgbFile, LgbTree, XgbFile
from serving.boosters.models import BoosterModel
from serving.trees import LEQ, LT, Ensemble, Plan, ensemble_graph

__all__ = ["booster_onnx"]

_IDENTITY = {"reg:squarederror", "reg:squaredlogerror", "reg:pseudohubererror",
             "reg:absoluteerror", "binary:logitraw"}  # fmt: skip
_XGB_LOG = {"count:poisson", "reg:gamma", "reg:tweedie"}
_LGB_IDENTITY = {"regression", "regression_l1", "huber", "fair", "quantile", "mape",
                 "lambdarank", "rank_xendcg"}  # fmt: skip
_LGB_LOG = {"poisson", "gamma", "tweedie"}


def booster_onnx(model: BoosterModel) -> bytes | None:
    """The graph of `model`'s predict and predict_proba, or None when it is not written."""
    plan = _xgb_plan(model) if model.format == "xgboost" else _lgb_plan(model)
    if plan is None:
        return None
    return ensemble_graph(plan, model.n_features)


def _xgb_plan(model: BoosterModel) -> Plan | None:
    described = model.described
    assert isinstance(described, XgbFile)
    objective = described.objective
    if described.booster != "gbtree" or described.num_target != 1:
        return None
    if objective in _IDENTITY:
        link, margin = "identity", (lambda b: b)
    elif objective in ("reg:logistic", "binary:logistic"):
        link, margin = "logistic", _logit
    elif objective in _XGB_LOG:
        link, margin = "exp", math.log
    elif objective in ("multi:softprob", "multi:softmax"):
        link, margin = "softmax", (lambda b: b)
    else:
        return None
    groups = max(described.num_class, 1) if link == "softmax" else 1
    trees = described.trees
    best = described.best_iteration
    if best is not None:  # the wrappers' best iteration (models.py)
        indptr = described.iteration_indptr
        trees = trees[: indptr[best + 1]] if indptr else trees[: (best + 1) * groups]
    ensemble = Ensemble(n_targets=groups, mode=LT)
    for tree, group in zip(trees, described.tree_info, strict=False):
        if tree.categorical.any() or tree.leaf_vector > 1 or not 0 <= group < groups:
            return None
        leaf = tree.left < 0
        values = tree.condition.astype(np.float64)
        ensemble.add_tree(
            tree.left,
            tree.right,
            np.where(leaf, 0, tree.feature),
            np.where(leaf, 0.0, values),
            tree.default_left,
            np.where(leaf, values, 0.0),
            group,
        )
    base = described.base_score
    if len(base) not in (1, groups):
        return None
    try:
        offset = np.array([[margin(b) for b in np.broadcast_to(base, groups)]], dtype=np.float64)
    except ValueError:  # a base score outside the link's domain
        return None
    classes = model.classes_
    return Plan(
        ensemble,
        float32_features=True,
        offset=offset,
        classes=None if classes is None else np.asarray(classes),
        link=link,
        strict_positive=True,  # the wrappers: a class-1 probability above 0.5
    )


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _lgb_plan(model: BoosterModel) -> Plan | None:
    described = model.described
    assert isinstance(described, LgbFile)
    words = described.objective.split()
    kind = words[0] if words else "regression"
    options = dict(w.split(":", 1) for w in words[1:] if ":" in w)
    if "sqrt" in words[1:]:
        return None
    if kind in _LGB_IDENTITY:
        link = "identity"
    elif kind in _LGB_LOG:
        link = "exp"
    elif kind in ("binary", "cross_entropy", "xentropy"):
        if float(options.get("sigmoid", "1")) != 1.0:
            return None
        link = "logistic"
    elif kind in ("multiclass", "softmax"):
        link = "softmax"
    else:
        return None
    groups = described.num_tree_per_iteration
    ensemble = Ensemble(n_targets=groups, mode=LEQ)
    for index, tree in enumerate(described.trees):
        arrays = _lgb_arrays(tree)
        if arrays is None:
            return None
        ensemble.add_tree(*arrays, index % groups)
    divide = len(described.trees) / groups if described.average_output else None
    classes = model.classes_
    return Plan(
        ensemble,
        float32_features=False,
        divide=divide,
        classes=None if classes is None else np.asarray(classes),
        link=link,
        strict_positive=True,  # LGBMClassifier: argmax of [1 - p, p], a tie to class 0
    )


_DEFAULT_LEFT, _MISSING_ZERO, _MISSING_NAN = 2, 1, 2


def _lgb_arrays(tree: LgbTree) -> tuple[np.ndarray, ...] | None:
    """LightGBM's tree (internal nodes 0..L-2, leaves as ~index) as one node array: internal
    nodes first, then the leaves; the missing-value direction of each split resolved."""
    leaves = tree.num_leaves
    if leaves == 1:
        return (np.array([-1]), np.array([-1]), np.zeros(1, np.int64), np.zeros(1),
                np.zeros(1, bool), tree.leaf_value.astype(np.float64))  # fmt: skip
    internal = leaves - 1
    if (tree.decision_type & 1).any():  # categorical splits
        return None

    def node_of(child: np.ndarray) -> np.ndarray:
        return np.where(child >= 0, child, internal + ~child)

    size = internal + leaves
    left = np.full(size, -1, dtype=np.int64)
    right = np.full(size, -1, dtype=np.int64)
    left[:internal] = node_of(tree.left_child)
    right[:internal] = node_of(tree.right_child)
    feature = np.zeros(size, dtype=np.int64)
    feature[:internal] = tree.split_feature
    threshold = np.zeros(size)
    threshold[:internal] = tree.threshold
    missing_type = (tree.decision_type >> 2) & 3
    default_left = (tree.decision_type & _DEFAULT_LEFT).astype(bool)
    zero_goes_left = tree.threshold >= 0.0
    if np.any((missing_type == _MISSING_ZERO) & (default_left != zero_goes_left)):
        return None  # zero itself goes the default way: not one comparison
    missing_left = np.zeros(size, dtype=bool)
    # NaN: the default way; None: NaN is taken as 0.0; Zero: as 0.0, which goes that way.
    missing_left[:internal] = np.where(missing_type == _MISSING_NAN, default_left, zero_goes_left)
    weights = np.zeros(size)
    weights[internal:] = tree.leaf_value
    return left, right, feature, threshold, missing_left, weights
