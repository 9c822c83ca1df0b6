"""A tree-ensemble graph for rows without missing values.

ONNX Runtime's tree kernels check every comparison for NaN as soon as one node of an
ensemble says where a missing value goes (`nodes_missing_value_tracks_true`), and that
check costs 12-15% of a forest's time on many rows (100 trees of depth 10: 918 µs against
796 µs for 100 rows, one thread). A row without NaN takes the same path through every tree
either way, so a batch without NaN can run a copy of the graph with the tracking removed
and get the same answers, bit for bit.

That holds only where the ensemble sees the request's values as they came: its input must
be a graph input, through nothing but Cast and Identity (a Cast of a finite value is never
NaN). An ensemble behind any other operator, which might make a NaN of finite values, is
left as it is.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MISSING_TRACKS", "TREE_OPERATORS", "without_missing_tracks"]

TREE_OPERATORS = frozenset({"TreeEnsemble", "TreeEnsembleRegressor", "TreeEnsembleClassifier"})
MISSING_TRACKS = "nodes_missing_value_tracks_true"
_PASS_THROUGH = frozenset({"Cast", "Identity"})


def _fed_by_an_input(graph: Any, name: str) -> bool:
    """True when the value `name` is a graph input, through Cast and Identity only."""
    inputs = {value.name for value in graph.input}
    producers = {output: node for node in graph.node for output in node.output}
    seen: set[str] = set()
    while name not in inputs:
        node = producers.get(name)
        if node is None or node.op_type not in _PASS_THROUGH or name in seen:
            return False
        seen.add(name)
        name = node.input[0]
    return True


def without_missing_tracks(model: Any) -> bytes | None:
    """The serialized copy of the ONNX `model` (an onnx.ModelProto) with the missing-value
    tracking of its tree ensembles removed, or None when no ensemble tracks missing values
    or one that does cannot be proven to see only the request's values."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    changed = False
    for node in copy.graph.node:
        if node.op_type not in TREE_OPERATORS:
            continue
        tracks = [a for a in node.attribute if a.name == MISSING_TRACKS]
        if not tracks or not any(tracks[0].ints):
            continue
        if not _fed_by_an_input(copy.graph, node.input[0]):
            return None
        node.attribute.remove(tracks[0])
        changed = True
    return copy.SerializeToString() if changed else None
