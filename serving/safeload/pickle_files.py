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
from serving.safeload.skops_files import SkopsLimits


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


# Classes whose constructor takes a size or shape: called from a stream they allocate what it
# says (`bytearray(3_000_000_000)` in 34 bytes) or hand out uninitialized memory.
_SIZED = (bytes, bytearray, str, int, np.ndarray, np.generic)


def _check_call(target: Any, args: Any) -> None:
    """What REDUCE, INST, OBJ and NEWOBJ may call, with which arguments."""
    args = tuple(args) if isinstance(args, list | tuple) else (args,)
    if isinstance(target, type) and issubclass(target, _SIZED):
        plain = all(isinstance(a, bytes | bytearray | str) for a in args[:1]) and len(args) <= 2
        if issubclass(target, np.ndarray | np.generic) or not plain:
            raise _refused_call(target, "with arguments that size an allocation")
    name = getattr(target, "__name__", "")
    if name == "_reconstruct" and (len(args) != 3 or tuple(args[1]) != (0,)):
        raise _refused_call(target, "with a shape (NumPy writes (0,) and fills it by state)")


def _refused_call(target: Any, reason: str) -> InvalidInput:
    name = getattr(target, "__qualname__", type(target).__name__)
    return InvalidInput(f"the pickle calls {name} {reason}", {"artifact": f"refused call: {name}"})


class _BoundedReader:
    """The decompressed stream, refused once it inflates past the archive limits."""

    def __init__(self, raw: Any, stored: int, limits: SkopsLimits) -> None:
        self._raw, self._read = raw, 0
        self._cap = limits.max_uncompressed_bytes
        if stored:
            self._cap = min(
                self._cap, max(limits.ratio_floor_bytes, int(limits.max_ratio * stored))
            )

    def _count(self, size: int) -> None:
        self._read += size
        if self._read > self._cap:
            raise InvalidInput(
                f"the joblib file inflates past {self._cap} bytes",
                {"artifact": "decompressed size over the limit"},
            )

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size if size is not None and size >= 0 else self._cap + 1)
        self._count(len(data))
        return data

    def readline(self, size: int = -1) -> bytes:
        line = self._raw.readline(size if size is not None and size >= 0 else 1 << 20)
        self._count(len(line))
        return line

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)
        self._count(count or 0)
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


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

        def load_reduce(self) -> None:
            _check_call(self.stack[-2], self.stack[-1])
            NumpyUnpickler.load_reduce(self)

        def load_newobj(self) -> None:
            _check_call(self.stack[-2], self.stack[-1])
            NumpyUnpickler.load_newobj(self)

        def load_newobj_ex(self) -> None:
            _check_call(self.stack[-3], self.stack[-2])
            NumpyUnpickler.load_newobj_ex(self)

        def _instantiate(self, klass: Any, args: Any) -> None:
            _check_call(klass, args)
            NumpyUnpickler._instantiate(self, klass, args)

        dispatch[pickle.REDUCE[0]] = load_reduce
        dispatch[pickle.NEWOBJ[0]] = load_newobj
        dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

        def find_class(self, module: str, name: str) -> Any:
            dotted = f"{module}.{name}"
            if dotted not in allowed:
                raise UntrustedGlobal(
                    f"the pickle imports {dotted}, which is not on the allowlist of model "
                    "classes; register the model as skops or onnx, or (for a class you "
                    "trust) add it to TRUSTED_MODEL_CLASSES",
                    {"artifact": f"untrusted global: {dotted}"},
                )
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError) as error:
                # Allowed (or trusted) but absent here: a module this server lacks, or a
                # class another release of the library renamed. Name it, like skops does.
                raise InvalidInput(
                    f"the pickle needs {dotted}, which cannot be imported on this server "
                    f"({type(error).__name__}: {str(error)[:200]}); install the package that "
                    "provides it or register the model as skops or onnx",
                    {"artifact": f"cannot import {dotted}"},
                ) from None

    return RestrictedUnpickler


def load_pickle(
    file: BinaryIO,
    *,
    extra_classes: frozenset[str] = frozenset(),
    limits: SkopsLimits | None = None,
) -> Any:
    """Unpickle a joblib (or plain pickle) file, refusing any global not on the allowlist."""
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    unpickler_class = _restricted_unpickler(pickle_globals() | extra_classes)
    stored = _size(file)
    with _validate_fileobject_and_memmap(file, "", None) as (stream, _):
        if not isinstance(stream, str):
            stream = _BoundedReader(stream, stored, limits or SkopsLimits())
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


def _size(file: BinaryIO) -> int:
    try:
        here = file.tell()
        size = file.seek(0, 2)
        file.seek(here)
        return int(size)
    except (OSError, AttributeError, ValueError):
        return 0
