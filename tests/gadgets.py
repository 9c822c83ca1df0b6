"""Hostile artifacts: skops files and pickles whose loading runs code.

Each gadget touches a marker file when it runs, so a test can prove both that the gadget is
real (a trust-by-module-prefix policy runs it) and that the server never ran it.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import pathlib
import sys
import zipfile
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
import skops.io
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

X_TRAIN = np.random.default_rng(0).random((20, 3))
Y_TRAIN = X_TRAIN @ [1.0, 2.0, 3.0]


_ids = itertools.count(1)


def _node(cls: str, module: str, loader: str, **fields: Any) -> dict[str, Any]:
    # skops memoizes nodes by __id__, so each one needs its own
    return {
        "__class__": cls,
        "__module__": module,
        "__loader__": loader,
        **fields,
        "__id__": next(_ids),
    }


def _json(value: Any) -> dict[str, Any]:
    return _node(
        type(value).__name__, "builtins", "JsonNode", content=json.dumps(value), is_json=True
    )


def _tuple(*items: dict[str, Any]) -> dict[str, Any]:
    return _node("tuple", "builtins", "TupleNode", content=list(items))


def _list(*items: dict[str, Any]) -> dict[str, Any]:
    return _node("list", "builtins", "ListNode", content=list(items))


def _dict(**items: dict[str, Any]) -> dict[str, Any]:
    key_types = _list(*(_node("str", "builtins", "TypeNode") for _ in items))
    return _node("dict", "builtins", "DictNode", content=items, key_types=key_types)


def _call(module: str, name: str, *args: dict[str, Any]) -> dict[str, Any]:
    """A node that makes skops call module.name(*args) while building the model."""
    return _node(name, module, "ConstructorFromReduceNode", content=_tuple(*args))


def _touch_code(marker: pathlib.Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


# name -> node builder: functions in NumPy, SciPy, scikit-learn and builtins that exec, eval,
# spawn a process or open files, each writing the marker.
SKOPS_GADGETS: dict[str, Callable[[pathlib.Path], dict[str, Any]]] = {
    "numpy runstring (exec)": lambda m: _call(
        "numpy.testing._private.utils", "runstring", _json(_touch_code(m)), _dict()
    ),
    "builtins eval": lambda m: _call("builtins", "eval", _json(_touch_code(m))),
    "builtins exec": lambda m: _call("builtins", "exec", _json(_touch_code(m))),
    "os.system (process)": lambda m: _call("os", "system", _json(f"touch '{m}'")),
    "subprocess.Popen (process)": lambda m: _call(
        "subprocess", "check_call", _list(_json("touch"), _json(str(m)))
    ),
    "numpy savetxt (file)": lambda m: _call("numpy", "savetxt", _json(str(m)), _list(_json(1.0))),
    "scipy savemat (file)": lambda m: _call("scipy.io", "savemat", _json(str(m)), _dict()),
    "sklearn dump_svmlight_file (file)": lambda m: _call(
        "sklearn.datasets._svmlight_format_io",
        "dump_svmlight_file",
        _list(_list(_json(1.0))),
        _list(_json(1.0)),
        _json(str(m)),
    ),
    "sklearn run_python_script (process)": lambda m: _call(
        "sklearn.utils._testing", "assert_run_python_script_without_output", _json(_touch_code(m))
    ),
}


def fitted_pipeline():
    return make_pipeline(StandardScaler(), LinearRegression()).fit(X_TRAIN, Y_TRAIN)


def skops_with_gadget(node: dict[str, Any], *, nested: bool = True) -> bytes:
    """A valid pipeline's skops file with `node` hidden in its regressor's attributes (or as
    the whole file when not nested)."""
    data = skops.io.dumps(fitted_pipeline())
    source = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(source.read("schema.json"))
    if nested:
        steps = schema["content"]["content"]["steps"]["content"]
        regressor = steps[-1]["content"][1]
        attributes = regressor["content"]
        attributes["content"]["evil"] = _list(_dict(payload=node))
        attributes["key_types"]["content"].append(_node("str", "builtins", "TypeNode"))
    else:
        node = {**node, "protocol": schema["protocol"], "_skops_version": "x"}
        schema = node
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            if item.filename != "schema.json":
                target.writestr(item, source.read(item.filename))
        target.writestr("schema.json", json.dumps(schema))
    return out.getvalue()


def loads_trusting_everything(data: bytes) -> Any:
    """What a trust-by-module-prefix policy amounts to: trust what the file reports."""
    return skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))


class _Reduce:
    """Pickles as a call of `function(*args)`."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


def _runstring():
    from numpy.testing._private.utils import runstring

    return runstring


PICKLE_GADGETS: dict[str, Callable[[pathlib.Path], Any]] = {
    "pathlib touch": lambda m: _Reduce(pathlib.Path.touch, m),
    "os.system": lambda m: _Reduce(os.system, f"touch '{m}'"),
    "builtins exec": lambda m: _Reduce(exec, _touch_code(m)),
    "numpy runstring": lambda m: _Reduce(_runstring(), _touch_code(m), {}),
    "python subprocess": lambda m: _Reduce(
        __import__("subprocess").check_call, [sys.executable, "-c", _touch_code(m)]
    ),
}


def joblib_with(obj: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


def pipeline_hiding(gadget: Any, *, in_object_array: bool = False) -> Any:
    """A fitted pipeline whose regressor carries the gadget as an attribute (or inside an
    object array, which joblib writes as a nested pickle)."""
    model = fitted_pipeline()
    if in_object_array:
        holder = np.empty(1, dtype=object)
        holder[0] = gadget
        model[-1].evil = holder
    else:
        model[-1].evil = {"nested": [gadget]}
    return model
