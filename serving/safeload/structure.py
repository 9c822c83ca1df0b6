"""Checks on the arrays and index structures inside a loaded model, before it may predict.

An allowlist says which classes a model is built from, not whether their contents are sane.
scikit-learn's and SciPy's compiled code indexes arrays without bounds checks: a crafted file
whose tree children, split features, categorical bitsets, sparse indices or metric matrices
point outside their arrays would make the first prediction read (or write) out of bounds, or
loop forever. Every object reachable from the model is visited (no depth limit: a structure
nested deeper than a bound would go unchecked), on every load, from any format; attribute
checks (serving/safeload/attributes.py) run on the same walk.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from serving.safeload.attributes import (
    check_attributes,
    check_class_value,
    check_fit_only_placement,
)
from serving.safeload.errors import MalformedModel, refuse
from serving.safeload.estimators import check_estimator

__all__ = ["MalformedModel", "check_model_structure"]


_LIBRARY_CALLABLES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, np.ufunc)


def _children(obj: Any) -> Iterator[Any]:
    if isinstance(obj, _LIBRARY_CALLABLES):
        return  # an allowlisted function: its attributes are the library's, not the file's
    if isinstance(obj, functools.partial):
        yield obj.func
        yield from obj.args
        yield from obj.keywords.values()
    elif isinstance(obj, dict):
        yield from obj.keys()
        yield from obj.values()
    elif isinstance(obj, list | tuple | set | frozenset):
        yield from obj
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            yield from obj.ravel()
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from vars(obj).values()


MAX_VISITS = 2_000_000
MAX_WIDTHS_PER_OBJECT = 8
_SCALARS = (str, bytes, int, float, complex, bool, type(None), np.generic)


def _walk(model: Any) -> Iterator[tuple[Any, int | None]]:
    """Every object reachable from the model, with the input width of its nearest owner that
    declares one (an estimator's n_features_in_). Objects whose checks depend on that width
    (those without a width of their own: trees, bin mappers, metrics, pipelines) are visited
    under each width they are reached with, so a tree shared by a narrow and a wide owner
    must fit both; containers, arrays and estimators with their own width once. The number
    of visits is bounded too."""
    seen: set[Any] = set()
    widths: dict[int, int] = {}
    stack: list[tuple[Any, int | None]] = [(model, None)]
    visits = 0
    while stack:
        obj, width = stack.pop()
        own = vars(obj).get("n_features_in_") if _has_dict(obj) else None
        if isinstance(own, int | np.integer):
            width = int(own)
            key: Any = id(obj)
        elif _width_dependent(obj):
            key = (id(obj), width)
        else:
            key = id(obj)
        if key in seen:
            continue
        seen.add(key)
        if isinstance(key, tuple):
            widths[id(obj)] = widths.get(id(obj), 0) + 1
            if widths[id(obj)] > MAX_WIDTHS_PER_OBJECT:
                raise refuse("model", "an object is shared by owners of too many widths")
        visits += 1
        if visits > MAX_VISITS:
            raise refuse("model", f"more than {MAX_VISITS:,} objects to check")
        yield obj, width
        stack.extend((child, width) for child in _children(obj) if not isinstance(child, _SCALARS))


def _width_dependent(obj: Any) -> bool:
    """Objects whose checks use an owner's width: scikit-learn objects without a width of
    their own (trees, bin mappers, metrics, pipelines). Containers, arrays, classes and
    functions are checked the same under any width."""
    if isinstance(obj, (type, np.ndarray, np.dtype, functools.partial, *_LIBRARY_CALLABLES)):
        return False
    return type(obj).__module__.startswith("sklearn.")


def _has_dict(obj: Any) -> bool:
    return hasattr(obj, "__dict__") and not isinstance(obj, type)


def _check_children(what: str, left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> None:
    """Internal nodes point strictly forward (scikit-learn numbers children after parents),
    inside the array; so every walk from the root ends at a leaf."""
    count = len(left)
    index = np.arange(count)
    inner = ~leaf
    for side in (left, right):
        child = side[inner].astype(np.int64)
        if child.size and (np.any(child <= index[inner]) or np.any(child >= count)):
            raise refuse(what, "a child index points outside the tree or backwards")


def check_tree(tree: Any, n_features: int | None) -> None:
    """sklearn.tree._tree.Tree: children, features and value rows within bounds, and a width
    its owner validates inputs against (ensembles call trees without checking)."""
    count = int(tree.node_count)
    left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
    feature = np.asarray(tree.feature)
    if count < 1 or len(left) != count or len(right) != count or len(feature) != count:
        raise refuse("decision tree", "node arrays disagree with node_count")
    if n_features is None or int(tree.n_features) != n_features:
        raise refuse("decision tree", "its width differs from its estimator's n_features_in_")
    leaf = left == -1
    if np.any((right == -1) != leaf):
        raise refuse("decision tree", "a node has exactly one child")
    _check_children("decision tree", left, right, leaf)
    inner_features = feature[~leaf]
    if inner_features.size and (inner_features.min() < 0 or inner_features.max() >= n_features):
        raise refuse("decision tree", "a split names a feature outside the input")
    if np.asarray(tree.value).shape[0] != count:
        raise refuse("decision tree", "values disagree with node_count")


def check_tree_predictor(predictor: Any, categorical: np.ndarray | None) -> None:
    """HistGradientBoosting's TreePredictor: children, features and bitsets within bounds.
    `categorical` is the owner's bin mapper's is_categorical_ (its width)."""
    nodes = predictor.nodes
    names = nodes.dtype.names or ()
    if not {"left", "right", "feature_idx", "is_leaf"} <= set(names) or len(nodes) < 1:
        raise refuse("boosted tree", "unexpected node layout")
    if categorical is None:
        raise refuse("boosted tree", "no bin mapper declares its input width")
    leaf = nodes["is_leaf"].astype(bool)
    _check_children("boosted tree", nodes["left"], nodes["right"], leaf)
    features = nodes["feature_idx"][~leaf].astype(np.int64)
    if features.size and (features.min() < 0 or features.max() >= len(categorical)):
        raise refuse("boosted tree", "a split names a feature outside the input")
    for bitsets in (predictor.raw_left_cat_bitsets, predictor.binned_left_cat_bitsets):
        if np.asarray(bitsets).ndim != 2 or np.asarray(bitsets).shape[1] != 8:
            raise refuse("boosted tree", "categorical bitsets have the wrong shape")
    if "is_categorical" in names:
        split_on_category = ~leaf & nodes["is_categorical"].astype(bool)
        if np.any(~categorical.astype(bool)[nodes["feature_idx"][split_on_category]]):
            raise refuse("boosted tree", "a categorical split on a numeric feature")
        bitsets = nodes["bitset_idx"][split_on_category]
        limit = min(len(predictor.raw_left_cat_bitsets), len(predictor.binned_left_cat_bitsets))
        if bitsets.size and bitsets.max() >= limit:
            raise refuse("boosted tree", "a categorical split points outside its bitsets")


def check_bin_mapper(mapper: Any, width: int | None) -> np.ndarray:
    """The width and known categories HistGradientBoosting's predict indexes bitsets with."""
    categorical = np.asarray(getattr(mapper, "is_categorical_", None))
    if categorical.ndim != 1 or (width is not None and len(categorical) != width):
        raise refuse("boosted model", "its bin mapper disagrees with the input width")
    thresholds = getattr(mapper, "bin_thresholds_", [])
    if len(thresholds) != len(categorical):
        raise refuse("boosted model", "its bin mapper disagrees with the input width")
    for index in np.flatnonzero(categorical):
        known = np.asarray(thresholds[index], dtype=np.float64)
        if known.size and (known.min() < 0 or known.max() > 255 or np.any(known % 1)):
            raise refuse("boosted model", "a known category outside 0..255")
    return categorical


def check_neighbor_tree(tree: Any) -> None:
    """KDTree/BallTree: sample indices and node ranges within the data; its metric's
    parameters the data's width."""
    state = tree.__getstate__()
    data, idx, node_data, bounds = (np.asarray(a) for a in state[:4])
    samples = len(data)
    if (
        data.ndim != 2
        or len(idx) != samples
        or (samples and (idx.min() < 0 or idx.max() >= samples))
    ):
        raise refuse("neighbor tree", "sample indices outside the data")
    nodes = len(node_data)
    if nodes < 1 or bounds.ndim != 3 or bounds.shape[1:] != (nodes, data.shape[1]):
        raise refuse("neighbor tree", "node arrays disagree")
    start, end = node_data["idx_start"], node_data["idx_end"]
    if np.any(start < 0) or np.any(end > samples) or np.any(start > end):
        raise refuse("neighbor tree", "a node's sample range is outside the data")
    inner = np.flatnonzero(~node_data["is_leaf"].astype(bool))
    if inner.size and 2 * inner.max() + 2 >= nodes:
        raise refuse("neighbor tree", "an inner node has no children")
    for part in state[4:]:
        if _is_distance_metric(part):
            check_distance_metric(part, data.shape[1])


def _is_distance_metric(obj: Any) -> bool:
    from sklearn.metrics._dist_metrics import DistanceMetric32, DistanceMetric64

    return isinstance(obj, DistanceMetric64 | DistanceMetric32)


def check_distance_metric(metric: Any, width: int | None) -> None:
    """A metric's weight vector and matrix are indexed by feature without checks."""
    _, vec, mat = metric.__getstate__()[:3]
    vec, mat = np.asarray(vec), np.asarray(mat)
    name = type(metric).__name__
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise refuse("distance metric", f"{name} has a matrix that is not square")
    needs_matrix = name.startswith("Mahalanobis")
    needs_vector = name.startswith(("SEuclidean", "WMinkowski"))
    if width is None and (needs_matrix or needs_vector or vec.size > 1 or mat.size > 1):
        raise refuse("distance metric", f"{name} has parameters but no declared width")
    if (needs_matrix or mat.size > 1) and mat.shape[0] != width:
        raise refuse("distance metric", f"{name}'s matrix does not match the input width")
    if (needs_vector or vec.size > 1) and vec.size != width:
        raise refuse("distance metric", f"{name}'s weights do not match the input width")


def check_array(array: np.ndarray) -> None:
    if array.dtype.itemsize == 0 and array.size:
        raise refuse("array", "elements of zero bytes")


def check_sparse(matrix: Any) -> None:
    """Index arrays within the shape, and consistent (SciPy's full check)."""
    try:
        if hasattr(matrix, "check_format"):
            matrix.check_format(full_check=True)
        if matrix.format == "coo":
            for axis, coords in enumerate(matrix.coords):
                if coords.size and (coords.min() < 0 or coords.max() >= matrix.shape[axis]):
                    raise ValueError("coordinates outside the shape")
        elif matrix.format not in ("csr", "csc", "bsr"):
            raise ValueError(f"format {matrix.format!r} is not served")
    except (ValueError, TypeError, AttributeError, IndexError) as error:
        raise refuse("sparse matrix", str(error)[:200]) from None


def check_ensemble(ensemble: Any, width: int | None) -> None:
    """Forests and gradient boosting call their trees without validating the input: each
    member must have the ensemble's width, or (bagging) the width of its feature subset."""
    members = getattr(ensemble, "estimators_", None)
    if members is None or width is None:
        return
    members = list(np.asarray(members, dtype=object).ravel())
    subsets = getattr(ensemble, "estimators_features_", None)
    if subsets is not None:
        if len(subsets) != len(members):
            raise refuse("ensemble", "feature subsets disagree with its members")
        for member, features in zip(members, subsets, strict=True):
            features = np.asarray(features)
            if features.size and (features.min() < 0 or features.max() >= width):
                raise refuse("ensemble", "a member's features are outside the input")
            if getattr(member, "n_features_in_", None) != len(features):
                raise refuse("ensemble", "a member's width differs from its feature subset")
        return
    for member in members:
        if getattr(member, "n_features_in_", None) != width:
            raise refuse("ensemble", "a member's width differs from the ensemble's")


def check_model_structure(model: Any) -> None:
    """Check every array, index structure and code-reaching attribute in the model; raise
    MalformedModel naming the first problem."""
    import scipy.sparse
    from sklearn.ensemble import BaseEnsemble
    from sklearn.ensemble._gb import BaseGradientBoosting
    from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.neighbors import BallTree, KDTree
    from sklearn.tree._tree import Tree

    predictors: set[int] = set()
    checked: set[int] = set()
    for obj, width in _walk(model):
        if isinstance(obj, type):
            check_class_value(obj)
        elif isinstance(obj, np.ndarray):
            check_array(obj)
        elif scipy.sparse.issparse(obj):
            check_sparse(obj)
        elif isinstance(obj, Tree):
            check_tree(obj, width)
        elif isinstance(obj, TreePredictor):
            predictors.add(id(obj))
        elif isinstance(obj, KDTree | BallTree):
            check_neighbor_tree(obj)
        elif _is_distance_metric(obj):
            check_distance_metric(obj, width)
        elif isinstance(obj, np.dtype) and obj.fields:
            _check_fields(obj)
        elif isinstance(obj, dict | list | tuple | set | frozenset):
            check_fit_only_placement(obj)
        elif isinstance(obj, functools.partial):
            check_fit_only_placement([obj.func, *obj.args, *obj.keywords.values()])
        if _has_dict(obj) and not isinstance(obj, _LIBRARY_CALLABLES):
            check_attributes(obj)
            check_estimator(obj, width)
            mapper = vars(obj).get("_bin_mapper")
            if isinstance(mapper, _BinMapper):
                categorical = check_bin_mapper(mapper, width)
                for predictor in _nested(vars(obj).get("_predictors", [])):
                    if isinstance(predictor, TreePredictor):
                        check_tree_predictor(predictor, categorical)
                        checked.add(id(predictor))
            if isinstance(obj, BaseEnsemble | BaseGradientBoosting):
                check_ensemble(obj, width)
    if predictors - checked:
        raise refuse("boosted tree", "a tree predictor outside a boosted model's predictors")


def _nested(items: Any) -> Iterator[Any]:
    stack = [items]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
        else:
            yield item


def _check_fields(dtype: np.dtype) -> None:
    for field_dtype, offset, *_ in dtype.fields.values():
        if offset < 0 or offset + field_dtype.itemsize > dtype.itemsize:
            raise refuse("array", "a structured dtype's field lies outside its items")
