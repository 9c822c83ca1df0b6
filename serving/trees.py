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
  by the number of trees; boosting adds its baseline, then applies its loss's inverse link:
  exp for log-link losses, expit for binary and softmax for multiclass classifiers, with
  labels taken from the raw score as scikit-learn takes them).

Classifier probabilities have one target per class, and a leaf of this operator feeds one
target, so a forest classifier becomes one copy of each tree per class (one in all for two
classes, the first class's probability being the complement). Boosting classifiers already
have one tree per class and stage (one in all for two classes), so nothing is copied.

Only exact, known classes are taken; anything else returns None (and skl2onnx is tried).
Whatever is built here is verified against scikit-learn like any conversion
(serving/accelerate.py) before it is served.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LEQ", "LT", "Ensemble", "Plan", "ensemble_graph", "tree_ensemble_onnx"]

ML_OPSET = 5  # TreeEnsemble
ONNX_OPSET = 21
_LEQ = 0  # BRANCH_LEQ: x <= split goes to the true (left) branch, as in scikit-learn
_LT = 1  # BRANCH_LT: x < split, as in XGBoost
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
    modes: list[int] = field(default_factory=list)
    mode: int = _LEQ  # the comparison of the trees being added

    def _leaf(self, target: int, weight: float) -> int:
        self.leaf_targets.append(target)
        self.leaf_weights.append(weight)
        return len(self.leaf_weights) - 1

    def _node(self, feature: int, split: float, missing_left: bool) -> int:
        self.features.append(feature)
        self.splits.append(split)
        self.missing_true.append(int(missing_left))
        self.modes.append(self.mode)
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

    def node(self, helper: Any, numpy_helper: Any, output: str, *, float32: bool = False) -> Any:
        """The operator on "features"; with `float32`, on "x32" (the float32 features) and in
        float32, its thresholds rounded down to float32 so that `x32 <= split` decides as
        scikit-learn's `float(x32) <= threshold` does."""

        def doubles(values: list[float]) -> Any:
            return numpy_helper.from_array(np.asarray(values, dtype=np.float64))

        def splits() -> Any:
            if not float32:
                return doubles(self.splits)
            exact = np.asarray(self.splits, dtype=np.float64)
            rounded = exact.astype(np.float32)
            above = rounded.astype(np.float64) > exact
            rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
            return numpy_helper.from_array(rounded)

        def leaves() -> Any:
            if not float32:
                return doubles(self.leaf_weights)
            return numpy_helper.from_array(np.asarray(self.leaf_weights, dtype=np.float32))

        return helper.make_node(
            "TreeEnsemble",
            ["x32" if float32 else "features"],
            [output],
            domain="ai.onnx.ml",
            aggregate_function=1,  # SUM: the division or offset follows, as in scikit-learn
            post_transform=0,
            n_targets=self.n_targets,
            tree_roots=self.roots,
            nodes_featureids=self.features,
            nodes_splits=splits(),
            nodes_modes=numpy_helper.from_array(np.asarray(self.modes, dtype=np.uint8)),
            nodes_missing_value_tracks_true=self.missing_true,
            nodes_truenodeids=self.true_ids,
            nodes_trueleafs=self.true_leafs,
            nodes_falsenodeids=self.false_ids,
            nodes_falseleafs=self.false_leafs,
            leaf_targetids=self.leaf_targets,
            leaf_weights=leaves(),
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


def _boosting(model: Any) -> _Ensemble:
    """Gradient boosting: stage s, score k is tree estimators_[s, k], scaled by the
    learning rate (scikit-learn adds `learning_rate * value` stage by stage)."""
    stages = model.estimators_
    ensemble = _Ensemble(n_targets=stages.shape[1])
    scale = float(model.learning_rate)
    for stage in stages:
        for k, tree in enumerate(stage):
            left, right, feature, threshold, missing, value = _sklearn_tree(tree)
            ensemble.add_tree(left, right, feature, threshold, missing, scale * value[:, 0, 0], k)
    return ensemble


def _hist_boosting(model: Any) -> _Ensemble | None:
    """Histogram boosting: iteration i, score k is `_predictors[i][k]`, whose leaf values
    already carry the learning rate; categorical splits (bitsets) are not written."""
    ensemble = _Ensemble(n_targets=int(model.n_trees_per_iteration_))
    for predictors in model._predictors:
        for k, predictor in enumerate(predictors):
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
                k,
            )
    return ensemble


# scikit-learn's inverse link of a boosting loss -> what the graph applies to the raw score.
_LINKS = {
    "IdentityLink": "identity",
    "LogLink": "exp",
    "LogitLink": "logistic",
    "HalfLogitLink": "half-logistic",  # exponential loss: expit(2 * raw)
    "MultinomialLogit": "softmax",
}


def _link(model: Any) -> str | None:
    return _LINKS.get(type(getattr(getattr(model, "_loss", None), "link", None)).__name__)


def _constant_init(model: Any) -> bool:
    """Boosting's baseline is a constant only for the default (dummy) or zero init."""
    init = model.init_
    if isinstance(init, str):
        return init == "zero"
    return type(init).__name__ in ("DummyRegressor", "DummyClassifier")


@dataclass
class _Plan:
    """What the graph computes around the ensemble's sums."""

    ensemble: _Ensemble
    float32_features: bool = True
    divide: float | None = None
    offset: np.ndarray | None = None
    classes: np.ndarray | None = None
    link: str | None = None  # boosting: raw score -> answer (None: forests, trees)
    strict_positive: bool = False  # binary boosting: label 1 when raw > 0 (else >= 0)
    preprocessing: list[tuple[str, np.ndarray]] = field(default_factory=list)


def _plan(model: Any, width: int) -> _Plan | None:
    name = type(model).__name__
    if name in _FORESTS or name in _TREES:
        estimators = list(model.estimators_) if name in _FORESTS else [model]
        ensemble = _regression(estimators, 1.0, int(model.n_outputs_))
        divide = float(len(estimators)) if name in _FORESTS else None
        return _Plan(ensemble, divide=divide)
    if name in _FOREST_CLASSIFIERS or name in _TREE_CLASSIFIERS:
        if int(model.n_outputs_) != 1 or not 2 <= len(model.classes_) <= _MAX_CLASSES:
            return None
        estimators = list(model.estimators_) if name in _FOREST_CLASSIFIERS else [model]
        ensemble = _classification(estimators, len(model.classes_))
        divide = float(len(estimators)) if name in _FOREST_CLASSIFIERS else None
        return _Plan(ensemble, divide=divide, classes=np.asarray(model.classes_))
    link = _link(model)
    if link is None:
        return None
    classifier = name.endswith("Classifier")
    if classifier != (link in ("logistic", "half-logistic", "softmax")):
        return None
    classes = np.asarray(model.classes_) if classifier else None
    if name in ("GradientBoostingRegressor", "GradientBoostingClassifier"):
        if not _constant_init(model):
            return None
        # GradientBoostingRegressor.predict is the raw score whatever its loss.
        offset = np.asarray(model._raw_predict_init(np.zeros((1, width))), dtype=np.float64)
        return _Plan(
            _boosting(model),
            offset=offset,
            classes=classes,
            link=link if classifier else "identity",
        )
    if name in ("HistGradientBoostingRegressor", "HistGradientBoostingClassifier"):
        ensemble = _hist_boosting(model)
        if ensemble is None:
            return None
        return _Plan(
            ensemble,
            float32_features=False,  # histogram boosting compares the float64 values
            offset=np.asarray(model._baseline_prediction, dtype=np.float64).reshape(1, -1),
            classes=classes,
            link=link,
            strict_positive=True,  # scikit-learn: "> 0", so that a tie is the first class
        )
    return None


def _preprocessing(steps: list[Any], width: int) -> list[tuple[str, np.ndarray]] | None:
    """A pipeline's steps before its trees, as float64 elementwise operations that repeat
    scikit-learn's own arithmetic (so they answer to the bit); None for any other step."""
    ops: list[tuple[str, np.ndarray]] = []
    for step in steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        kind = type(step)
        if not kind.__module__.startswith("sklearn."):
            return None
        name = f"{kind.__module__.split('.')[1]}.{kind.__name__}"
        if name == "preprocessing.StandardScaler":
            if step.with_mean:
                ops.append(("Sub", np.asarray(step.mean_, dtype=np.float64)))
            if step.with_std:
                ops.append(("Div", np.asarray(step.scale_, dtype=np.float64)))
        elif name == "preprocessing.MinMaxScaler" and not step.clip:
            ops.append(("Mul", np.asarray(step.scale_, dtype=np.float64)))
            ops.append(("Add", np.asarray(step.min_, dtype=np.float64)))
        elif name == "impute.SimpleImputer":
            fill = np.asarray(step.statistics_, dtype=np.float64)
            missing = step.missing_values
            if step.add_indicator or not (isinstance(missing, float) and np.isnan(missing)):
                return None
            if np.isnan(fill).any():  # columns with no values are dropped or kept as NaN
                return None
            ops.append(("FillNaN", fill))
        else:
            return None
        if ops and ops[-1][1].shape != (width,):
            return None
    return ops


def _prepare_nodes(
    ops: list[tuple[str, np.ndarray]], helper: Any, numpy_helper: Any, initializers: list[Any]
) -> tuple[list[Any], str]:
    nodes = []
    last = "X"
    for i, (op, values) in enumerate(ops):
        constant, out = f"prep{i}_values", f"prep{i}"
        initializers.append(numpy_helper.from_array(values.reshape(1, -1), constant))
        if op == "FillNaN":
            nodes += [
                helper.make_node("IsNaN", [last], [f"prep{i}_nan"]),
                helper.make_node("Where", [f"prep{i}_nan", constant, last], [out]),
            ]
        else:
            nodes.append(helper.make_node(op, [last, constant], [out]))
        last = out
    return nodes, last


def tree_ensemble_onnx(model: Any, width: int, *, float32: bool = False) -> bytes | None:
    """A float64 ONNX graph computing `model`'s predict (and predict_proba), or None when
    `model` is not a tree ensemble this module knows (alone, or ending a pipeline of
    scalers and imputers).

    `float32`: the ensemble itself in float32 (thresholds rounded down, so every row takes
    scikit-learn's path; leaf values and their sum in float32, about 7 significant digits);
    the rest of the graph stays float64. Only for regressors whose trees compare float32
    features (not histogram boosting, whose float64 comparisons float32 cannot repeat):
    None otherwise."""
    ops: list[tuple[str, np.ndarray]] = []
    if type(model).__name__ == "Pipeline" and type(model).__module__.startswith("sklearn."):
        found = _preprocessing([step for _, step in model.steps[:-1]], width)
        if found is None:
            return None
        ops, model = found, model.steps[-1][1]
    kind = type(model)
    if not kind.__module__.startswith(("sklearn.ensemble", "sklearn.tree")):
        return None
    plan = _plan(model, width)
    if plan is None:
        return None
    if plan.classes is not None and plan.classes.dtype.kind not in "biufU":
        if not all(type(label) is str for label in plan.classes):
            return None
        plan.classes = plan.classes.astype(str)
    if float32 and (not plan.float32_features or plan.classes is not None):
        # Classifiers stay float64: summed in float32, two classes' probabilities a rounding
        # apart (or tied) could swap the label scikit-learn gives.
        return None
    plan.preprocessing = ops
    return _graph(plan, width, float32=float32)


def _graph(plan: _Plan, width: int, *, float32: bool = False) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    ensemble, classes = plan.ensemble, plan.classes
    initializers: list[Any] = []
    nodes, prepared = _prepare_nodes(plan.preprocessing, helper, numpy_helper, initializers)
    if float32:
        nodes += [
            helper.make_node("Cast", [prepared], ["x32"], to=TensorProto.FLOAT),
            ensemble.node(helper, numpy_helper, "summed32", float32=True),
            helper.make_node("Cast", ["summed32"], ["summed"], to=TensorProto.DOUBLE),
        ]
    elif plan.float32_features:
        nodes += [
            helper.make_node("Cast", [prepared], ["x32"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["x32"], ["features"], to=TensorProto.DOUBLE),
            ensemble.node(helper, numpy_helper, "summed"),
        ]
    else:
        nodes += [
            helper.make_node("Identity", [prepared], ["features"]),
            ensemble.node(helper, numpy_helper, "summed"),
        ]
    last = "summed"
    if plan.divide is not None:
        initializers.append(numpy_helper.from_array(np.array(plan.divide), "count"))
        nodes.append(helper.make_node("Div", [last, "count"], ["mean"]))
        last = "mean"
    if plan.offset is not None:
        initializers.append(numpy_helper.from_array(plan.offset, "baseline"))
        nodes.append(helper.make_node("Add", [last, "baseline"], ["raw"]))
        last = "raw"
    if plan.link == "exp":
        nodes.append(helper.make_node("Exp", [last], ["expected"]))
        last = "expected"
    elif plan.link == "logistic" and classes is None:  # a probability, not a classifier
        initializers.append(numpy_helper.from_array(np.array(1.0), "unit"))
        nodes += [
            helper.make_node("Neg", [last], ["negated"]),
            helper.make_node("Exp", ["negated"], ["odds_against"]),
            helper.make_node("Add", ["unit", "odds_against"], ["denominator"]),
            helper.make_node("Div", ["unit", "denominator"], ["expected"]),
        ]
        last = "expected"
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
        if plan.link is None:  # summed probabilities
            if ensemble.n_targets == 1:  # two classes: [1 - p, p]
                initializers.append(numpy_helper.from_array(np.array(1.0), "one"))
                nodes += [
                    helper.make_node("Sub", ["one", last], ["complement"]),
                    helper.make_node("Concat", ["complement", last], ["proba"], axis=1),
                ]
                last = "proba"
            nodes.append(helper.make_node("ArgMax", [last], ["best"], axis=1, keepdims=0))
        elif plan.link == "softmax":
            # The label is the largest raw score, as in scikit-learn (not the largest
            # probability, which exp may tie).
            nodes += [
                helper.make_node("ArgMax", [last], ["best"], axis=1, keepdims=0),
                helper.make_node("Softmax", [last], ["proba"], axis=1),
            ]
            last = "proba"
        else:
            nodes += _logistic(plan, last, helper, numpy_helper, initializers)
            last = "proba"
        nodes += [
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


def _logistic(
    plan: _Plan, raw: str, helper: Any, numpy_helper: Any, initializers: list[Any]
) -> list[Any]:
    """Binary boosting: p = 1 / (1 + exp(-score)), scipy's expit written out (ONNX Runtime's
    Sigmoid loses relative precision on small probabilities); [1 - p, p] as scikit-learn
    computes them; the label from the raw score's sign, with scikit-learn's tie rule."""
    from onnx import TensorProto

    initializers += [
        numpy_helper.from_array(np.array(1.0), "one"),
        numpy_helper.from_array(np.array(0.0), "zero"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
    ]
    nodes = []
    score = raw
    if plan.link == "half-logistic":
        initializers.append(numpy_helper.from_array(np.array(2.0), "two"))
        nodes.append(helper.make_node("Mul", [raw, "two"], ["score"]))
        score = "score"
    compare = "Greater" if plan.strict_positive else "GreaterOrEqual"
    nodes += [
        helper.make_node("Neg", [score], ["negated"]),
        helper.make_node("Exp", ["negated"], ["odds_against"]),
        helper.make_node("Add", ["one", "odds_against"], ["denominator"]),
        helper.make_node("Div", ["one", "denominator"], ["positive"]),
        helper.make_node("Sub", ["one", "positive"], ["negative"]),
        helper.make_node("Concat", ["negative", "positive"], ["proba"], axis=1),
        helper.make_node(compare, [raw, "zero"], ["is_positive"]),
        helper.make_node("Cast", ["is_positive"], ["index"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["index", "flat"], ["best"]),
    ]
    return nodes


# The names other tree sources (serving/boosters) build graphs with.
LEQ, LT = _LEQ, _LT
Ensemble, Plan = _Ensemble, _Plan


def ensemble_graph(plan: Plan, width: int) -> bytes:
    """The float64 ONNX graph of a plan built elsewhere (XGBoost, LightGBM trees)."""
    return _graph(plan, width)
