"""A model made only of allowed classes can still be hostile: tree indices that point outside
their arrays, and ONNX tensors that point at files. Both are refused before anything runs."""

from __future__ import annotations

import io

import joblib
import numpy as np
import onnx
import pytest
import skops.io
from onnx import TensorProto, helper
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

from serving.safeload.onnx_files import ExternalData, check_onnx_inline
from serving.safeload.pickle_files import load_pickle
from serving.safeload.skops_files import load_skops
from serving.safeload.structure import MalformedModel, check_model_structure

RNG = np.random.default_rng(0)
X = RNG.random((40, 3))
Y = X @ [1.0, 2.0, 3.0]


def _tampered_tree(edit) -> DecisionTreeRegressor:
    model = DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, Y)
    state = model.tree_.__getstate__()
    nodes = state["nodes"].copy()
    edit(nodes)
    state["nodes"] = nodes
    model.tree_.__setstate__(state)
    return model


TREE_EDITS = {
    "child-points-back-at-the-root": lambda n: n["left_child"].__setitem__(0, 0),
    "child-outside-the-array": lambda n: n["right_child"].__setitem__(0, 10_000),
    "feature-outside-the-input": lambda n: n["feature"].__setitem__(0, 1_000_000),
    "negative-feature": lambda n: n["feature"].__setitem__(0, -5),
    "one-child-only": lambda n: n["right_child"].__setitem__(0, -1),
}


@pytest.mark.parametrize("edit", sorted(TREE_EDITS))
def test_a_tampered_decision_tree_is_refused(edit):
    model = _tampered_tree(TREE_EDITS[edit])
    with pytest.raises(MalformedModel, match="decision tree"):
        check_model_structure(model)


@pytest.mark.parametrize("fmt", ["skops", "joblib"])
def test_a_tampered_tree_deep_inside_a_forest_is_refused_on_load(fmt):
    forest = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(X, Y)
    bad = _tampered_tree(TREE_EDITS["child-outside-the-array"])
    forest.estimators_[2] = bad
    model = make_pipeline(StandardScaler(), forest)
    if fmt == "skops":
        loaded = load_skops(skops.io.dumps(model))
    else:
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        loaded = load_pickle(io.BytesIO(buffer.getvalue()))
    with pytest.raises(MalformedModel):
        check_model_structure(loaded)
    check_model_structure(
        make_pipeline(
            StandardScaler(), RandomForestRegressor(n_estimators=2, random_state=0).fit(X, Y)
        )
    )


def test_a_tree_wider_than_its_owner_is_refused():
    """The estimator validates inputs at its own width: a split past it reads out of bounds."""
    model = DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, Y)
    check_model_structure(model)
    model.n_features_in_ = 1
    with pytest.raises(MalformedModel, match="n_features_in_"):
        check_model_structure(model)


def test_a_tampered_boosted_tree_is_refused():
    model = HistGradientBoostingRegressor(max_iter=3).fit(X, Y)
    check_model_structure(model)
    nodes = model._predictors[1][0].nodes
    inner = np.flatnonzero(~nodes["is_leaf"].astype(bool))[0]
    nodes["feature_idx"][inner] = 99
    with pytest.raises(MalformedModel, match="boosted tree"):
        check_model_structure(model)
    nodes["feature_idx"][inner] = 0
    nodes["left"][inner] = len(nodes) + 5
    with pytest.raises(MalformedModel, match="boosted tree"):
        check_model_structure(model)


def test_a_tampered_neighbor_tree_is_refused():
    model = KNeighborsRegressor(3, algorithm="kd_tree").fit(X, Y)
    check_model_structure(model)
    state = list(model._tree.__getstate__())
    state[1] = state[1].copy()
    state[1][0] = 10_000  # a sample index outside the data
    model._tree.__setstate__(tuple(state))
    with pytest.raises(MalformedModel, match="neighbor tree"):
        check_model_structure(model)


# --- ONNX external data ----------------------------------------------------------------------


def _onnx_adding(weights: onnx.TensorProto, *, in_subgraph: bool = False) -> bytes:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])
    if not in_subgraph:
        graph = helper.make_graph(
            [helper.make_node("Add", ["X", "W"], ["Y"])], "g", [x], [y], initializer=[weights]
        )
    else:
        branch_out = helper.make_tensor_value_info("B", TensorProto.FLOAT, [None, 2])
        branch = helper.make_graph(
            [helper.make_node("Add", ["X", "W"], ["B"])],
            "branch",
            [],
            [branch_out],
            initializer=[weights],
        )
        cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
        graph = helper.make_graph(
            [helper.make_node("If", ["cond"], ["Y"], then_branch=branch, else_branch=branch)],
            "g",
            [x],
            [y],
            initializer=[cond],
        )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _external(location: str) -> onnx.TensorProto:
    tensor = helper.make_tensor("W", TensorProto.FLOAT, [2], [0.0, 0.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


@pytest.mark.parametrize("in_subgraph", [False, True], ids=["graph", "if-branch"])
def test_onnx_external_data_is_refused_before_a_session_exists(tmp_path, in_subgraph, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOPSECRETTOKEN12")
    monkeypatch.chdir(tmp_path)
    data = _onnx_adding(_external("secret.txt"), in_subgraph=in_subgraph)
    with pytest.raises(ExternalData, match="external data"):
        check_onnx_inline(data)
    inline = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
    check_onnx_inline(_onnx_adding(inline, in_subgraph=in_subgraph))


def test_onnx_external_data_would_read_the_file_without_the_check(tmp_path, monkeypatch):
    """The attack is real: onnxruntime resolves the location against the working directory."""
    import onnxruntime as ort

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.array([7.0, 9.0], dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)
    data = _onnx_adding(_external("secret.bin"))
    options = ort.SessionOptions()  # some graph optimizations happen to trip over it; not all
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    out = session.run(None, {"X": np.zeros((1, 2), dtype=np.float32)})[0]
    assert out.tolist() == [[7.0, 9.0]]


def test_onnx_model_load_refuses_external_data(tmp_path, monkeypatch):
    from serving.formats import OnnxModel

    (tmp_path / "w.bin").write_bytes(np.zeros(2, dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExternalData):
        OnnxModel.load(_onnx_adding(_external("w.bin")))
