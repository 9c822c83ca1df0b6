"""Loading joblib/pickle artifacts without letting them run code.

Unpickling runs whatever callables the stream names: `os.system` takes one GLOBAL and one
REDUCE. Every callable and class a pickle can reach comes through `find_class` (GLOBAL,
STACK_GLOBAL, INST, OBJ and the copyreg extension codes), so an unpickler whose `find_class`
answers only names on the allowlist, and raises before importing anything else, never calls
an object outside it. joblib's array wrappers read nested pickles through the same
`find_class` (joblib >= 1.5). Persistent ids (PERSID) are refused by the base class.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from registry.errors import InvalidInput
from serving.safeload.allowlist import pickle_globals


class PickleRefused(InvalidInput):
    """A pickle-based artifact while ALLOW_PICKLE is false."""

    title = "Pickle-based formats are disabled"


class UntrustedGlobal(InvalidInput):
    title = "Artifact imports something outside the allowlist"


def _restricted_unpickler(allowed: frozenset[str]) -> type:
    from joblib.numpy_pickle import NumpyUnpickler

    class RestrictedUnpickler(NumpyUnpickler):  # type: ignore[misc, valid-type]
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
        return unpickler_class("", stream, True).load()
