"""Tree ensembles as float64 ONNX graphs, built from the fitted trees themselves.

skl2onnx emits `TreeEnsembleRegressor`/`Classifier` (ai.onnx.ml opset 3), whose output is
float32 whatever its input: a forest then answers 2.4375587 where scikit-learn says
2.437557988975885. ONNX Runtime (1.20 and later) runs `TreeEnsemble` (ai.onnx.ml opset 5),
which computes in the input's type, so this module writes that operator directly:

* thresholds, leaf values and sums are float64, as in scikit-learn;
* scikit-learn's trees (not histogram gradient boosting) compare float32 features against
  float64 thresholds: the graph casts the input to float32 and back, as they do;
* missing values (NaN) go where scikit-learn sends them (`missing_go_to_left`, recorded
  per node when a tree is fitted), through `nodes_missing_value_tracks_true`;
* sums are divided or offset the way scikit-learn does (a forest's mean is a sum divided
  by the number of trees; boosting adds its baseline).

Classifier probabilities have one target per class, and a leaf of this operator feeds one
target, so a forest classifier becomes one copy of each tree per class (one in all for two
classes, the first class's probability being the complement).

Only exact, known classes are taken; anything else returns None (and skl2onnx is tried).
Whatever is built here is verified against scikit-learn like any conversion
(serving/accelerate.py) before it is served.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["tree_ensemble_onnx"]

ML_OPSET = 5  # TreeEnsemble
ONNX_OPSET = 21
_LEQ = 0  # BRANCH_LEQ: x <= split goes to the true (left) branch, as in scikit-learn
_MAX_CLASSES = 20  # a copy of every tree per class: bound what that costs

_FORESTS = {"RandomForestRegressor", "ExtraTreesRegressor"}
_FOREST_CLASSIFIERS = {"RandomForestClassifier", "ExtraTreesClassifier"}
_TREES = {"DecisionTreeRegressor", "ExtraTreeRegressor"}
_TREE_CLASSIFIERS = {"DecisionTreeClassifier", "ExtraTreeClassifier"}


@dataclass
class _Ensemble:
    """The TreeEnsemble attributes, filled tree by tree."""

    n_targets: int
    roots: list[int] = field(default_factory=list)
    features: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    true_leafs: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    false_leafs: list[int] = field(default_factory=list)
    leaf_targets: list[int] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)

    def _leaf(self, target: int, weight: float) -> int:
        self.leaf_targets.append(target)
        self.leaf_weights.append(weight)
        return len(self.leaf_weights) - 1

    def _node(self, feature: int, split: float, missing_left: bool) -> int:
        self.features.append(feature)
        self.splits.append(split)
        self.missing_true.append(int(missing_left))
        for ids in (self.true_ids, self.true_leafs, self.false_ids, self.false_leafs):
            ids.append(0)
        return len(self.features) - 1

    def add_tree(
        self,
        left: np.ndarray,
        right: np.ndarray,
        feature: np.ndarray,
        threshold: np.ndarray,
        missing_left: np.ndarray,
        leaf_weight: np.ndarray,  # per node: the weight its leaf adds to `target`
        target: int,
    ) -> None:
        if left[0] < 0:  # a single leaf: a split whose two branches reach it
            leaf = self._leaf(target, float(leaf_weight[0]))
            root = self._node(0, 0.0, True)
            self.true_ids[root], self.true_leafs[root] = leaf, 1
            self.false_ids[root], self.false_leafs[root] = leaf, 1
            self.roots.append(root)
            return
        index: dict[int, int] = {}
        order = [0]
        while order:  # internal nodes first, so that children can be wired to them
            node = order.pop()
            index[node] = self._node(
                int(feature[node]), float(threshold[node]), bool(missing_left[node])
            )
            order.extend(c for c in (int(right[node]), int(left[node])) if left[c] >= 0)
        for node, at in index.items():
            for child, ids, leafs in (
                (int(left[node]), self.true_ids, self.true_leafs),
                (int(right[node]), self.false_ids, self.false_leafs),
            ):
                if left[child] >= 0:
                    ids[at], leafs[at] = index[child], 0
                else:
                    ids[at], leafs[at] = self._leaf(target, float(leaf_weight[child])), 1
        self.roots.append(index[0])

    def node(self, helper: Any, numpy_helper: Any, output: str) -> Any:
        def doubles(values: list[float]) -> Any:
            return numpy_helper.from_array(np.asarray(values, dtype=np.float64))

        return helper.make_node(
            "TreeEnsemble",
            ["features"],
            [output],
            domain="ai.onnx.ml",
            aggregate_function=1,  # SUM: the division or offset follows, as in scikit-learn
            post_transform=0,
            n_targets=self.n_targets,
            tree_roots=self.roots,
            nodes_featureids=self.features,
            nodes_splits=doubles(self.splits),
            nodes_modes=numpy_helper.from_array(np.full(len(self.features), _LEQ, dtype=np.uint8)),
            nodes_missing_value_tracks_true=self.missing_true,
            nodes_truenodeids=self.true_ids,
            nodes_trueleafs=self.true_leafs,
            nodes_falsenodeids=self.false_ids,
            nodes_falseleafs=self.false_leafs,
            leaf_targetids=self.leaf_targets,
            leaf_weights=doubles(self.leaf_weights),
        )


def _sklearn_tree(tree: Any) -> tuple[np.ndarray, ...]:
    t = tree.tree_
    missing = getattr(t, "missing_go_to_left", None)
    if missing is None:  # fitted before scikit-learn knew missing values
        missing = np.zeros(t.node_count, dtype=np.uint8)
    return t.children_left, t.children_right, t.feature, t.threshold, missing, t.value


def _regression(estimators: list[Any], scale: float, width: int) -> _Ensemble:
    ensemble = _Ensemble(n_targets=width)
    for tree in estimators:
        left, right, feature, threshold, missing, value = _sklearn_tree(tree)
        for k in range(width):
            ensemble.add_tree(left, right, feature, threshold, missing, scale * value[:, k, 0], k)
    return ensemble


def _classification(estimators: list[Any], n_classes: int) -> _Ensemble:
    """Per-class probability sums; two classes need only the second's (the graph takes the
    first as its complement, which halves the trees: 1 - p is within an ulp of the mean of
    the first class's probabilities, and the verification checks labels exactly)."""
    targets = 1 if n_classes == 2 else n_classes
    ensemble = _Ensemble(n_targets=targets)
    for tree in estimators:
        left, right, feature, threshold, missing, value = _sklearn_tree(tree)
        proba = value[:, 0, :n_classes]
        total = proba.sum(axis=1, keepdims=True)
        proba = proba / np.where(total == 0, 1, total)
        for c in range(n_classes - targets, n_classes):
            target = c - (n_classes - targets)
            ensemble.add_tree(left, right, feature, threshold, missing, proba[:, c], target)
    return ensemble


def _hist_boosting(model: Any) -> _Ensemble | None:
    ensemble = _Ensemble(n_targets=1)
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            return None
        leaf = nodes["is_leaf"].astype(bool)
        left = np.where(leaf, -1, nodes["left"].astype(np.int64))
        right = np.where(leaf, -1, nodes["right"].astype(np.int64))
        ensemble.add_tree(
            left,
            right,
            nodes["feature_idx"],
            nodes["num_threshold"],
            nodes["missing_go_to_left"],
            nodes["value"],
            0,
        )
    return ensemble


def tree_ensemble_onnx(model: Any, width: int) -> bytes | None:
    """A float64 ONNX graph computing `model`'s predict (and predict_proba), or None when
    `model` is not a tree ensemble this module knows."""
    kind = type(model)
    if not kind.__module__.startswith(("sklearn.ensemble", "sklearn.tree")):
        return None
    name = kind.__name__
    classes = None
    float32_features = True
    offset = None
    divide = None
    if name in _FORESTS or name in _TREES:
        estimators = list(model.estimators_) if name in _FORESTS else [model]
        targets = int(model.n_outputs_)
        ensemble = _regression(estimators, 1.0, targets)
        divide = float(len(estimators)) if name in _FORESTS else None
    elif name in _FOREST_CLASSIFIERS or name in _TREE_CLASSIFIERS:
        if int(model.n_outputs_) != 1 or not 2 <= len(model.classes_) <= _MAX_CLASSES:
            return None
        classes = np.asarray(model.classes_)
        estimators = list(model.estimators_) if name in _FOREST_CLASSIFIERS else [model]
        ensemble = _classification(estimators, len(classes))
        divide = float(len(estimators)) if name in _FOREST_CLASSIFIERS else None
    elif name == "GradientBoostingRegressor":
        if model.loss != "squared_error" or model.init_ == "zero":
            return None
        estimators = [stage[0] for stage in model.estimators_]
        ensemble = _regression(estimators, float(model.learning_rate), 1)
        offset = np.asarray(model._raw_predict_init(np.zeros((1, width))), dtype=np.float64)
    elif name == "HistGradientBoostingRegressor":
        if model._loss.__class__.__name__ != "HalfSquaredError":
            return None
        built = _hist_boosting(model)
        if built is None:
            return None
        ensemble = built
        float32_features = False  # histogram boosting compares the float64 values
        offset = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(1, -1)
    else:
        return None
    if classes is not None and classes.dtype.kind not in "biufU":
        if not all(type(label) is str for label in classes):
            return None
        classes = classes.astype(str)
    return _graph(ensemble, width, float32_features, divide, offset, classes)


def _graph(
    ensemble: _Ensemble,
    width: int,
    float32_features: bool,
    divide: float | None,
    offset: np.ndarray | None,
    classes: np.ndarray | None,
) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    initializers = []
    if float32_features:
        nodes += [
            helper.make_node("Cast", ["X"], ["x32"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["x32"], ["features"], to=TensorProto.DOUBLE),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["X"], ["features"]))
    nodes.append(ensemble.node(helper, numpy_helper, "summed"))
    last = "summed"
    if divide is not None:
        initializers.append(numpy_helper.from_array(np.array(divide), "count"))
        nodes.append(helper.make_node("Div", [last, "count"], ["mean"]))
        last = "mean"
    if offset is not None:
        initializers.append(numpy_helper.from_array(offset, "baseline"))
        nodes.append(helper.make_node("Add", [last, "baseline"], ["raw"]))
        last = "raw"
    outputs = []
    if classes is None:
        nodes.append(helper.make_node("Identity", [last], ["variable"]))
        outputs.append(
            helper.make_tensor_value_info(
                "variable", TensorProto.DOUBLE, [None, ensemble.n_targets]
            )
        )
    else:
        labels = classes.astype(object) if classes.dtype.kind == "U" else classes
        initializers.append(numpy_helper.from_array(np.asarray(labels), "classes"))
        if ensemble.n_targets == 1:  # two classes: [1 - p, p]
            initializers.append(numpy_helper.from_array(np.array(1.0), "one"))
            nodes += [
                helper.make_node("Sub", ["one", last], ["complement"]),
                helper.make_node("Concat", ["complement", last], ["proba"], axis=1),
            ]
            last = "proba"
        nodes += [
            helper.make_node("ArgMax", [last], ["best"], axis=1, keepdims=0),
            helper.make_node("Gather", ["classes", "best"], ["label"], axis=0),
            helper.make_node("Identity", [last], ["probabilities"]),
        ]
        label_type = (
            TensorProto.STRING
            if classes.dtype.kind == "U"
            else helper.np_dtype_to_tensor_dtype(classes.dtype)
        )
        outputs += [
            helper.make_tensor_value_info("label", label_type, [None]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.DOUBLE, [None, len(classes)]
            ),
        ]
    graph = helper.make_graph(
        nodes,
        "modelreg_tree_ensemble",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, width])],
        outputs,
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", ONNX_OPSET),
            helper.make_opsetid("ai.onnx.ml", ML_OPSET),
        ],
        producer_name="modelreg",
    )
    model.ir_version = 10
    return model.SerializeToString()
