"""The exact classes (and the few pure numeric functions) a served model may be made of.

A module prefix is never trusted: scikit-learn, NumPy and SciPy all contain functions that
exec, eval, spawn processes or open files (numpy.testing's runstring, for one). Each name here
is an importable class, except the short, named list of numeric functions that estimators keep
as parameters (SelectKBest's score function, say) and the NumPy/SciPy ufuncs, which are
elementwise arithmetic kernels. Pickles additionally need the constructor helpers NumPy,
joblib and Cython emit for arrays and extension types; those are named one by one too.
"""

from __future__ import annotations

import functools
import importlib
import threading
import warnings
from collections.abc import Callable, Iterable

import numpy as np

# Internal scikit-learn classes that fitted public estimators hold (trees, losses, links,
# kernels, binning, calibration, optimizers). Distance metrics and neighbor trees are
# listed by their module below; PyFuncDistance (which calls a stored Python function) is not.
SKLEARN_INTERNAL_CLASSES = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.cluster._bisect_k_means._BisectingTree",
    "sklearn.cluster._birch._CFNode",
    "sklearn.cluster._birch._CFSubcluster",
    "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.utils._bunch.Bunch",
    "sklearn.compose._column_transformer._RemainderColsList",
    "sklearn.preprocessing._encoders._BaseEncoder",
)

# Numeric functions estimators keep as parameters or internals; each is pure computation.
SKLEARN_FUNCTIONS = (
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.feature_selection._univariate_selection.f_regression",
    "sklearn.feature_selection._univariate_selection.r_regression",
    "sklearn.feature_selection._univariate_selection.chi2",
    "sklearn.feature_selection._mutual_info.mutual_info_classif",
    "sklearn.feature_selection._mutual_info.mutual_info_regression",
    "sklearn.cluster._kmeans._kmeans_single_lloyd",
    "sklearn.cluster._kmeans._kmeans_single_elkan",
    "sklearn.utils.validation.check_array",
    "numpy.mean",
    "numpy.median",
    "numpy.average",
    "numpy.sum",
    "numpy.max",
    "numpy.min",
    "numpy.std",
    "scipy._lib.array_api_compat.numpy._aliases.asarray",
)

# Of those, the ones only fitting calls: compiled k-means steps that write by the shapes of
# their arguments, and mutual information (which starts processes with n_jobs). They may be
# held only where fitting keeps them (FIT_ONLY_PLACES), never where predict calls a function.
FIT_ONLY_FUNCTIONS = frozenset(
    {
        "sklearn.feature_selection._mutual_info.mutual_info_classif",
        "sklearn.feature_selection._mutual_info.mutual_info_regression",
        "sklearn.cluster._kmeans._kmeans_single_lloyd",
        "sklearn.cluster._kmeans._kmeans_single_elkan",
    }
)
FIT_ONLY_PLACES = frozenset({"score_func", "_kmeans_single"})

# What pickles of NumPy arrays, random states and Cython extension types are rebuilt with.
PICKLE_CONSTRUCTORS = (
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray.scalar",
    "numpy._core.numeric._frombuffer",
    "numpy.core.numeric._frombuffer",
    "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor",
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
    "sklearn.metrics._dist_metrics.newObj",
    "sklearn.neighbors._kd_tree.newObj",
    "sklearn.neighbors._ball_tree.newObj",
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "copyreg._reconstructor",
    "_codecs.encode",
)

BUILTIN_CLASSES = (
    "builtins.object",
    "builtins.dict",
    "builtins.list",
    "builtins.set",
    "builtins.frozenset",
    "builtins.tuple",
    "builtins.str",
    "builtins.bytes",
    "builtins.bytearray",
    "builtins.int",
    "builtins.float",
    "builtins.complex",
    "builtins.bool",
    "builtins.slice",
    "builtins.NoneType",
    "collections.OrderedDict",
    "collections.defaultdict",
    "functools.partial",  # binds arguments to a callable that is itself judged
)

NUMPY_CLASSES = (
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.ma.core.MaskedArray",
    "numpy.random.mtrand.RandomState",
    "numpy.random._generator.Generator",
    "numpy.random.bit_generator.SeedSequence",
)


_BUILDING = threading.RLock()


def _once(build: Callable[[], frozenset[str]]) -> Callable[[], frozenset[str]]:
    """Compute a name set on first use, under a lock: discovering scikit-learn's estimators
    imports its modules, which is not safe from several threads at once."""
    cached = functools.cache(build)

    @functools.wraps(build)
    def get() -> frozenset[str]:
        with _BUILDING:
            return cached()

    return get


def _names(obj: object) -> set[str]:
    """How skops and pickle name an object: module path (skops' or pickle's) plus its name."""
    from skops.io._utils import get_module

    name = obj.__name__  # type: ignore[attr-defined]
    names = {f"{get_module(obj)}.{name}"}
    module = getattr(obj, "__module__", None)
    if module:
        names.add(f"{module}.{getattr(obj, '__qualname__', name)}")
    return names


def _resolve(dotted: str) -> object | None:
    module, _, attr = dotted.rpartition(".")
    with warnings.catch_warnings():  # numpy.core.* names still resolve, with a warning
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None  # absent in this release of the library


def _subclasses(base: type) -> Iterable[type]:
    for cls in base.__subclasses__():
        yield cls
        yield from _subclasses(cls)


def _sklearn_classes() -> set[type]:
    import sklearn._loss._loss as cyloss
    import sklearn._loss.link as link
    import sklearn._loss.loss as loss
    import sklearn.gaussian_process.kernels as kernels
    import sklearn.metrics._dist_metrics as dist
    from sklearn.utils import all_estimators

    classes = {cls for _, cls in all_estimators()}
    classes.update(c for c in map(_resolve, SKLEARN_INTERNAL_CLASSES) if isinstance(c, type))
    # Families of small math objects, chosen by base class (never by module): losses, links,
    # kernels, and the distance metrics that compute in Cython (not PyFuncDistance).
    for base in (loss.BaseLoss, link.BaseLink, kernels.Kernel):
        classes.update(c for c in _subclasses(base) if c.__module__.startswith("sklearn."))
    classes.add(link.Interval)
    classes.update(
        c
        for c in vars(dist).values()
        if isinstance(c, type)
        and issubclass(c, dist.DistanceMetric64 | dist.DistanceMetric32)
        and "PyFunc" not in c.__name__
    )
    classes.update(
        c for c in vars(cyloss).values() if isinstance(c, type) and c.__name__.startswith("Cy")
    )
    # SGD's hinge, log, huber... losses derive from the Cython loss base.
    classes.update(
        c for c in _subclasses(cyloss.CyLossFunction) if c.__module__.startswith("sklearn.")
    )
    return classes


def _numpy_classes() -> set[type]:
    scalars = set(np.sctypeDict.values())
    dtypes = {type(np.dtype(t)) for t in scalars}
    bit_generators = {
        c
        for c in vars(np.random).values()
        if isinstance(c, type) and issubclass(c, np.random.BitGenerator)
    }
    named = {c for c in map(_resolve, NUMPY_CLASSES) if isinstance(c, type)}
    return scalars | dtypes | bit_generators | named


def _scipy_classes() -> set[type]:
    import scipy.sparse

    classes = {
        c
        for c in vars(scipy.sparse).values()
        if isinstance(c, type) and issubclass(c, scipy.sparse.sparray | scipy.sparse.spmatrix)
    }
    spline = _resolve("scipy.interpolate._bsplines.BSpline")
    if isinstance(spline, type):
        classes.add(spline)
    return classes


def _builtin_classes() -> set[type]:
    return {c for c in map(_resolve, BUILTIN_CLASSES) if isinstance(c, type)}


@_once
def model_classes() -> frozenset[str]:
    """Every class a model may be built from, by the names skops and pickle give it."""
    classes = _sklearn_classes() | _numpy_classes() | _scipy_classes() | _builtin_classes()
    return frozenset(name for cls in classes for name in _names(cls))


@_once
def model_functions() -> frozenset[str]:
    """The functions a model may reference: NumPy/SciPy ufuncs and the named numeric ones."""
    import scipy.special

    names = {f"numpy.{n}" for n, f in vars(np).items() if isinstance(f, np.ufunc)}
    names.update(
        f"scipy.special.{n}" for n, f in vars(scipy.special).items() if isinstance(f, np.ufunc)
    )
    for dotted in SKLEARN_FUNCTIONS:
        function = _resolve(dotted)
        if callable(function) and not isinstance(function, type):
            names.add(dotted)
    return frozenset(names)


@_once
def pickle_globals() -> frozenset[str]:
    """What a pickle may import: model classes, the named functions and array constructors."""
    constructors = {d for d in PICKLE_CONSTRUCTORS if _resolve(d) is not None}
    return model_classes() | model_functions() | frozenset(constructors)
