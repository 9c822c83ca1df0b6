"""serving.linear: linear models evaluated with numpy, within the documented bound of
scikit-learn's answers (NativeLinear.error_bound) on every input layout and thread count."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from sklearn.linear_model import (
    ElasticNet,
    HuberRegressor,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving.linear import NativeLinear, native_linear
from tests.helpers import assert_linear_agreement

RNG = np.random.default_rng(11)
X = RNG.normal(size=(200, 5))
Y = X @ np.array([1.5, -2.0, 0.0, 3.0, 0.25]) + 4.0
PROBE = RNG.normal(size=(64, 5)) * 3
# BLAS takes another kernel for one or two rows, Fortran order or strided views: check them all.
PROBES = (PROBE, PROBE[:1], PROBE[1:3], np.asfortranarray(PROBE), PROBE[::2], PROBE[:, ::-1])


REGRESSORS = {
    "linear": lambda: LinearRegression().fit(X, Y),
    "ridge": lambda: Ridge(alpha=2.0).fit(X, Y),
    "lasso": lambda: Lasso(alpha=0.05).fit(X, Y),
    "elastic-net": lambda: ElasticNet(alpha=0.05).fit(X, Y),
    "huber": lambda: HuberRegressor().fit(X, Y),
    "sgd": lambda: SGDRegressor(random_state=0).fit(X, Y),
    "no-intercept": lambda: LinearRegression(fit_intercept=False).fit(X, Y),
    "two-targets": lambda: Ridge().fit(X, np.column_stack([Y, 2 * Y])),
}
CLASSIFIERS = {
    "binary-strings": lambda: LogisticRegression().fit(X, np.where(Y > 4, "hi", "lo")),
    "binary-bools": lambda: LogisticRegression().fit(X, Y > 4),
    "binary-ints": lambda: LogisticRegression().fit(X, (Y > 4).astype(int) * 7),
    "three-classes": lambda: LogisticRegression().fit(X, np.digitize(Y, [0, 8])),
}


def roundtrip(native: NativeLinear) -> NativeLinear:
    return NativeLinear.from_bytes(native.to_bytes())


@pytest.mark.parametrize("name", list(REGRESSORS))
def test_regressors_match_scikit_learn_within_the_bound(name):
    model = REGRESSORS[name]()
    native = native_linear(model)
    assert native is not None and native.methods == ("predict",)
    for form in (native, roundtrip(native)):
        for rows in PROBES:
            got = form.predict(rows)
            assert got.shape == model.predict(rows).shape
            assert_linear_agreement(model, rows, got)
    assert not hasattr(native, "__dict__")  # slots: nothing else is kept


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_classifiers_match_labels_exactly_and_probabilities_closely(name):
    model = CLASSIFIERS[name]()
    native = native_linear(model)
    assert native is not None and native.methods == ("predict", "predict_proba")
    for form in (native, roundtrip(native)):
        for rows in PROBES:
            assert form.predict(rows).tolist() == model.predict(rows).tolist()
            np.testing.assert_allclose(
                form.predict_proba(rows), model.predict_proba(rows), rtol=1e-12, atol=1e-15
            )


class CustomRegression(LinearRegression):
    def predict(self, X):
        return super().predict(X) * 2


@pytest.mark.parametrize(
    "model",
    [
        LinearRegression(),  # unfitted
        CustomRegression().fit(X, Y),  # a subclass may predict differently
        make_pipeline(StandardScaler(), LinearRegression()).fit(X, Y),
        LogisticRegression().fit(X, Y > 4).sparsify(),  # scipy sparse weights
        "not a model",
    ],
    ids=["unfitted", "subclass", "pipeline", "sparse", "string"],
)
def test_anything_else_is_declined(model):
    assert native_linear(model) is None


def test_string_labels_held_as_objects_are_served_as_strings():
    model = LogisticRegression().fit(X, np.array(["a", "b"] * 100, dtype=object))
    assert model.classes_.dtype == object  # as when fitted on a pandas column
    native = roundtrip(native_linear(model))
    assert native.predict(PROBE).tolist() == model.predict(PROBE).tolist()


def test_other_object_labels_are_declined():
    model = LogisticRegression().fit(X, Y > 4)
    model.classes_ = np.array([("a", 1), ("b", 2), None], dtype=object)[:2]
    assert model.classes_.dtype == object
    assert native_linear(model) is None  # storing them would need pickle


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a zip",
        b"PK\x03\x04 truncated",
    ],
)
def test_from_bytes_refuses_what_is_not_an_npz(data):
    with pytest.raises((ValueError, OSError, zipfile.BadZipFile, EOFError)):
        NativeLinear.from_bytes(data)


def test_from_bytes_refuses_unexpected_arrays_and_pickles():
    buffer = io.BytesIO()
    np.savez(buffer, weights=np.ones(3))
    with pytest.raises(ValueError, match="not a linear model"):
        NativeLinear.from_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(buffer, coef=np.array([{"x": 1}], dtype=object), intercept=np.zeros(1))
    with pytest.raises(ValueError):  # object arrays are never unpickled
        NativeLinear.from_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(buffer, coef=np.array(["a", "b"]), intercept=np.zeros(1))
    with pytest.raises(ValueError, match="unexpected"):
        NativeLinear.from_bytes(buffer.getvalue())


def test_the_stored_form_of_a_multi_target_model_agrees():
    model = LinearRegression().fit(X, np.column_stack([Y, -Y, 2 * Y]))
    stored = roundtrip(native_linear(model))
    for rows in PROBES:
        assert_linear_agreement(model, rows, stored.predict(rows))


THREAD_SETTINGS = {
    "blas-unset": {},
    "openblas-1": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    "openblas-2": {"OPENBLAS_NUM_THREADS": "2"},
    "omp-4": {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"},
}
_AGREEMENT_SCRIPT = """
import numpy as np
from tests.unit.test_linear import PROBES, REGRESSORS, native_linear
from tests.helpers import assert_linear_agreement
wide = np.random.default_rng(3).normal(size=(300, 64))
from sklearn.linear_model import LinearRegression
big = LinearRegression().fit(wide, wide @ np.arange(64.0))
for name, make in REGRESSORS.items():
    model = make()
    for rows in PROBES:
        assert_linear_agreement(model, rows, native_linear(model).predict(rows))
for rows in (wide, np.asfortranarray(wide), wide[:1], wide[::3]):
    assert_linear_agreement(big, rows, native_linear(big).predict(rows))
print("ok")
"""


@pytest.mark.parametrize("setting", sorted(THREAD_SETTINGS))
def test_agreement_holds_under_every_blas_thread_setting(setting):
    """Thread counts change which BLAS kernel sums the products: the bound holds for all."""
    import os
    import pathlib
    import subprocess
    import sys

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
    }
    env.update(THREAD_SETTINGS[setting])
    root = pathlib.Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _AGREEMENT_SCRIPT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
