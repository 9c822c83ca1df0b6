"""Loading joblib/pickle artifacts without letting them run code.

Unpickling runs whatever callables the stream names: `os.system` takes one GLOBAL and one
REDUCE. Every callable and class a pickle can reach comes through `find_class` (GLOBAL,
STACK_GLOBAL, INST, OBJ and the copyreg extension codes), so an unpickler whose `find_class`
answers only names on the allowlist, and raises before importing anything else, never calls
an object outside it. joblib's array wrappers read nested pickles through the same
`find_class` (joblib >= 1.5). Persistent ids (PERSID) are refused by the base class.
"""

from __future__ import annotations

import pickle
import types
from typing import Any, BinaryIO

import numpy as np

from registry.errors import InvalidInput
from serving.safeload.allowlist import pickle_globals


class PickleRefused(InvalidInput):
    """A pickle-based artifact while ALLOW_PICKLE is false."""

    title = "Pickle-based formats are disabled"


class UntrustedGlobal(InvalidInput):
    title = "Artifact imports something outside the allowlist"


def _check_dtype_state(dtype: np.dtype, state: Any) -> None:
    """numpy.dtype's __setstate__ takes the dtype's flags and field offsets from the stream:
    an object dtype without its reference-counting flags makes an array of raw bytes into
    object pointers, a field offset past the item reads outside the array. The state is
    applied to a copy first, which must equal the dtype numpy itself builds from its
    description."""
    from numpy.lib.format import descr_to_dtype, dtype_to_descr

    probe = np.dtype(dtype, copy=True)
    try:
        probe.__setstate__(state)
        for field_dtype, offset, *_ in (probe.fields or {}).values():
            if offset < 0 or offset + field_dtype.itemsize > probe.itemsize:
                raise ValueError("a field lies outside the item")
        rebuilt = descr_to_dtype(dtype_to_descr(probe))
        same = (
            rebuilt == probe
            and rebuilt.itemsize == probe.itemsize
            and rebuilt.flags == probe.flags
            and rebuilt.hasobject == probe.hasobject
        )
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise _forged_dtype(str(error)) from None
    if not same:
        raise _forged_dtype("its state disagrees with its description")


def _forged_dtype(reason: str) -> InvalidInput:
    return InvalidInput(
        f"the pickle rebuilds a NumPy dtype numpy would not build: {reason}",
        {"artifact": "forged dtype state"},
    )


def _restricted_unpickler(allowed: frozenset[str]) -> type:
    from joblib.numpy_pickle import NumpyUnpickler

    class RestrictedUnpickler(NumpyUnpickler):  # type: ignore[misc, valid-type]
        dispatch = NumpyUnpickler.dispatch.copy()

        def load_build(self) -> None:
            target = self.stack[-2] if len(self.stack) >= 2 else None
            if isinstance(target, type | types.FunctionType | types.BuiltinFunctionType):
                # setting state on a class or function would change it for the whole process
                raise InvalidInput(
                    "the pickle sets attributes on "
                    f"{getattr(target, '__qualname__', type(target).__name__)}, a class or "
                    "function shared by every model",
                    {"artifact": "state set on a class or function"},
                )
            if isinstance(target, np.dtype):
                _check_dtype_state(target, self.stack[-1])
            NumpyUnpickler.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build

        def find_class(self, module: str, name: str) -> Any:
            dotted = f"{module}.{name}"
            if dotted not in allowed:
                raise UntrustedGlobal(
                    f"the pickle imports {dotted}, which is not on the allowlist of model "
                    "classes; register the model as skops or onnx, or (for a class you "
                    "trust) add it to TRUSTED_MODEL_CLASSES",
                    {"artifact": f"untrusted global: {dotted}"},
                )
            return super().find_class(module, name)

    return RestrictedUnpickler


def load_pickle(file: BinaryIO, *, extra_classes: frozenset[str] = frozenset()) -> Any:
    """Unpickle a joblib (or plain pickle) file, refusing any global not on the allowlist."""
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    unpickler_class = _restricted_unpickler(pickle_globals() | extra_classes)
    with _validate_fileobject_and_memmap(file, "", None) as (stream, _):
        if isinstance(stream, str):  # joblib < 0.10 layout: arrays in companion files
            raise InvalidInput(
                "the artifact uses joblib's pre-0.10 layout with companion files",
                {"artifact": "unsupported joblib layout"},
            )
        try:
            return unpickler_class("", stream, True).load()
        except InvalidInput:
            raise
        except (Exception, RecursionError) as error:  # any other failure: not a sane pickle
            raise InvalidInput(
                "the artifact is not a readable joblib file",
                {"artifact": f"unreadable pickle ({type(error).__name__})"},
            ) from None
