"""Checks on the index arrays inside a loaded model, before it may predict.

An allowlist says which classes a model is built from, not whether their contents are sane.
scikit-learn's compiled trees index their node arrays without bounds checks, so a crafted file
whose child or feature indices point outside the arrays would make the first prediction read
out of bounds (or loop forever, for a child pointing back at its parent). These checks run on
every load, on objects from any format.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from registry.errors import InvalidInput


class MalformedModel(InvalidInput):
    title = "Artifact holds a malformed model"


def _refuse(what: str, reason: str) -> MalformedModel:
    return MalformedModel(
        f"the artifact's {what} is malformed: {reason}", {"artifact": f"{what}: {reason}"}
    )


def _children(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        yield from obj.values()
    elif isinstance(obj, list | tuple):
        yield from obj
    elif isinstance(obj, np.ndarray):
        if obj.dtype == object:
            yield from obj.ravel()
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from vars(obj).values()


def _walk(model: Any) -> Iterator[tuple[Any, int | None]]:
    """Every object reachable from the model, with the input width of its nearest owner
    that declares one (an estimator's n_features_in_)."""
    seen: set[int] = set()
    # No depth limit: a structure nested deeper than any bound would go unchecked.
    stack: list[tuple[Any, int | None]] = [(model, None)]
    while stack:
        obj, width = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        own = getattr(obj, "n_features_in_", None) if hasattr(obj, "__dict__") else None
        if isinstance(own, int | np.integer):
            width = int(own)
        yield obj, width
        stack.extend((child, width) for child in _children(obj))


def _check_children(what: str, left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> None:
    """Internal nodes point strictly forward (scikit-learn numbers children after parents),
    inside the array; so every walk from the root ends at a leaf."""
    count = len(left)
    index = np.arange(count)
    inner = ~leaf
    for side in (left, right):
        child = side[inner].astype(np.int64)
        if child.size and (np.any(child <= index[inner]) or np.any(child >= count)):
            raise _refuse(what, "a child index points outside the tree or backwards")


def check_tree(tree: Any, n_features: int | None) -> None:
    """sklearn.tree._tree.Tree: children, features and value rows within bounds."""
    count = int(tree.node_count)
    left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
    feature = np.asarray(tree.feature)
    if count < 1 or len(left) != count or len(right) != count or len(feature) != count:
        raise _refuse("decision tree", "node arrays disagree with node_count")
    leaf = left == -1
    if np.any((right == -1) != leaf):
        raise _refuse("decision tree", "a node has exactly one child")
    _check_children("decision tree", left, right, leaf)
    inner_features = feature[~leaf]
    # The owner validates inputs against its own width, so both widths bound a split.
    width = int(tree.n_features)
    if n_features is not None:
        width = min(width, n_features)
    if inner_features.size and (inner_features.min() < 0 or inner_features.max() >= width):
        raise _refuse("decision tree", "a split names a feature outside the input")
    if np.asarray(tree.value).shape[0] != count:
        raise _refuse("decision tree", "values disagree with node_count")


def check_tree_predictor(predictor: Any, n_features: int | None) -> None:
    """HistGradientBoosting's TreePredictor: children, features and bitsets within bounds."""
    nodes = predictor.nodes
    names = nodes.dtype.names or ()
    if not {"left", "right", "feature_idx", "is_leaf"} <= set(names) or len(nodes) < 1:
        raise _refuse("boosted tree", "unexpected node layout")
    leaf = nodes["is_leaf"].astype(bool)
    _check_children("boosted tree", nodes["left"], nodes["right"], leaf)
    features = nodes["feature_idx"][~leaf]
    if features.size and (
        features.min() < 0 or (n_features is not None and features.max() >= n_features)
    ):
        raise _refuse("boosted tree", "a split names a feature outside the input")
    if "is_categorical" in names:
        categorical = ~leaf & nodes["is_categorical"].astype(bool)
        bitsets = nodes["bitset_idx"][categorical]
        limit = min(len(predictor.raw_left_cat_bitsets), len(predictor.binned_left_cat_bitsets))
        if bitsets.size and bitsets.max() >= limit:
            raise _refuse("boosted tree", "a categorical split points outside its bitsets")


def check_neighbor_tree(tree: Any) -> None:
    """KDTree/BallTree: sample indices and node ranges within the data."""
    data, idx, node_data, bounds = (np.asarray(a) for a in tree.get_arrays())
    samples = len(data)
    if len(idx) != samples or (samples and (idx.min() < 0 or idx.max() >= samples)):
        raise _refuse("neighbor tree", "sample indices outside the data")
    nodes = len(node_data)
    if nodes < 1 or bounds.ndim < 2 or bounds.shape[1] != nodes:
        raise _refuse("neighbor tree", "node arrays disagree")
    start, end = node_data["idx_start"], node_data["idx_end"]
    if np.any(start < 0) or np.any(end > samples) or np.any(start > end):
        raise _refuse("neighbor tree", "a node's sample range is outside the data")
    inner = np.flatnonzero(~node_data["is_leaf"].astype(bool))
    if inner.size and 2 * inner.max() + 2 >= nodes:
        raise _refuse("neighbor tree", "an inner node has no children")


def check_model_structure(model: Any) -> None:
    """Check every compiled index structure reachable from the model; raise MalformedModel."""
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.neighbors import BallTree, KDTree
    from sklearn.tree._tree import Tree

    for obj, width in _walk(model):
        if isinstance(obj, TreePredictor):
            check_tree_predictor(obj, width)
        elif isinstance(obj, Tree):
            check_tree(obj, width)
        elif isinstance(obj, KDTree | BallTree):
            check_neighbor_tree(obj)
