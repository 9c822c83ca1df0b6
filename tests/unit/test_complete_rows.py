"""serving.complete_rows: a batch without NaN runs an ensemble without missing-value tracking,
and gets the answers the tracked graph gives; a batch with NaN still goes where scikit-learn
sends it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving.accelerate import _check
from serving.complete_rows import MISSING_TRACKS, without_missing_tracks
from serving.formats import OnnxModel
from serving.trees import tree_ensemble_onnx

RNG = np.random.default_rng(11)
X = RNG.normal(size=(300, 5))
Y = X @ np.array([1.0, -2.0, 0.5, 3.0, 0.0]) + RNG.normal(0, 0.1, 300)
HOLED = X.copy()
HOLED[RNG.random(X.shape) < 0.2] = np.nan
COMPLETE = RNG.normal(size=(80, 5))


def _tracks(data: bytes) -> list[int]:
    model = onnx.load_from_string(data)
    return [
        sum(attribute.ints)
        for node in model.graph.node
        for attribute in node.attribute
        if attribute.name == MISSING_TRACKS
    ]


@pytest.fixture(scope="module", params=["forest", "hist-boosting"])
def fitted(request):
    if request.param == "forest":
        return RandomForestRegressor(n_estimators=20, max_depth=8, random_state=0).fit(HOLED, Y)
    return HistGradientBoostingRegressor(max_iter=20).fit(HOLED, Y)


def test_an_ensemble_that_tracks_missing_values_gets_an_untracked_copy(fitted):
    built = tree_ensemble_onnx(fitted, 5)
    assert sum(_tracks(built)) > 0
    untracked = without_missing_tracks(onnx.load_from_string(built))
    assert untracked is not None and sum(_tracks(untracked)) == 0
    served = OnnxModel.load(built)
    assert served.complete_rows_session is not None


def test_complete_batches_answer_as_the_tracked_graph_does_bit_for_bit(fitted):
    served = OnnxModel.load(tree_ensemble_onnx(fitted, 5))
    tracked = served.session.run(None, {served.session.get_inputs()[0].name: COMPLETE})[0]
    untracked = served.complete_rows_session.run(
        None, {served.session.get_inputs()[0].name: COMPLETE}
    )[0]
    assert np.array_equal(tracked, untracked)
    np.testing.assert_allclose(served.predict(COMPLETE), fitted.predict(COMPLETE), rtol=1e-12)


def test_a_batch_with_one_missing_value_takes_the_tracked_graph(fitted):
    served = OnnxModel.load(tree_ensemble_onnx(fitted, 5))
    rows = COMPLETE.copy()
    rows[3, 1] = np.nan  # one cell in one row: the whole batch is tracked
    np.testing.assert_allclose(served.predict(rows), fitted.predict(rows), rtol=1e-12)
    # What the untracked graph would have said for that row differs somewhere in these
    # trees, which is why it is not used for it.
    holed = HOLED[np.isnan(HOLED).any(axis=1)][:40]
    untracked = served.complete_rows_session.run(
        None, {served.session.get_inputs()[0].name: holed}
    )[0]
    assert not np.allclose(untracked.ravel(), fitted.predict(holed), rtol=1e-12)
    np.testing.assert_allclose(served.predict(holed), fitted.predict(holed), rtol=1e-12)


def test_the_acceleration_check_runs_complete_and_holed_rows_through_both_graphs(fitted):
    """A verification batch mixing both kinds is split, so each session is compared with
    scikit-learn on its own rows."""
    rows = np.vstack([COMPLETE[:20], HOLED[:20]])
    checked = _check(fitted, tree_ensemble_onnx(fitted, 5), rows, None, np.float64)
    assert checked["matches"] is True
    assert checked["max_rel_diff"] <= 1e-12


def test_an_ensemble_behind_another_operator_keeps_its_tracking():
    """A scaler before the trees could turn finite values into NaN (inf times 0): the graph is
    left as it is."""
    model = make_pipeline(StandardScaler(), RandomForestRegressor(n_estimators=5)).fit(HOLED, Y)
    built = tree_ensemble_onnx(model, 5)
    assert built is not None and sum(_tracks(built)) > 0
    assert without_missing_tracks(onnx.load_from_string(built)) is None
    assert OnnxModel.load(built).complete_rows_session is None


def test_an_ensemble_without_tracking_needs_no_copy():
    from serving.accelerate import _convert

    model = RandomForestRegressor(n_estimators=3, random_state=0).fit(X, Y)
    converted = _convert(model, 5, np.float32)  # skl2onnx: no missing-value tracking
    assert without_missing_tracks(onnx.load_from_string(converted)) is None
    assert OnnxModel.load(converted).complete_rows_session is None
