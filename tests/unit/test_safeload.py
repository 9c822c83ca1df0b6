"""The safe loaders refuse, by name and before building anything, every artifact that names a
callable or class outside the allowlist; they still load what real models are made of."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tracemalloc
import zipfile

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from registry.errors import InvalidInput
from serving.safeload import TrustPolicy, trusted_class_names
from serving.safeload.pickle_files import UntrustedGlobal, load_pickle
from serving.safeload.skops_files import (
    SkopsLimits,
    UnsafeArchive,
    UntrustedTypes,
    load_skops,
    refused_names,
)
from tests import gadgets


class CustomScaler(StandardScaler):
    """A class of the user's own: refused unless named in TRUSTED_MODEL_CLASSES."""


def _schema(data: bytes) -> dict:
    return json.loads(zipfile.ZipFile(io.BytesIO(data)).read("schema.json"))


# --- skops -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(gadgets.SKOPS_GADGETS))
def test_each_skops_gadget_runs_code_under_a_trust_what_it_reports_policy(tmp_path, name):
    """The gadgets are real: a loader that trusts what the file reports runs them."""
    marker = tmp_path / "ran"
    data = gadgets.skops_with_gadget(gadgets.SKOPS_GADGETS[name](marker))
    with contextlib.suppress(Exception):  # some fail after they ran; running is what counts
        gadgets.loads_trusting_everything(data)
    assert marker.exists()


@pytest.mark.parametrize("nested", [True, False], ids=["inside-an-estimator", "top-level"])
@pytest.mark.parametrize("name", sorted(gadgets.SKOPS_GADGETS))
def test_each_skops_gadget_is_refused_by_name_without_running(tmp_path, name, nested):
    marker = tmp_path / "ran"
    node = gadgets.SKOPS_GADGETS[name](marker)
    data = gadgets.skops_with_gadget(node, nested=nested)
    with pytest.raises(UntrustedTypes) as refused:
        load_skops(data)
    assert f"{node['__module__']}.{node['__class__']}" in refused.value.detail
    assert "untrusted" in refused.value.errors["artifact"]
    assert not marker.exists()


@pytest.mark.parametrize(
    "node",
    [
        {
            "__class__": "Path",
            "__module__": "pathlib",
            "__loader__": "MethodNode",
            "content": {"func": "touch", "obj": {}},
        },
        {"__class__": "partial", "__module__": "os", "__loader__": "PartialNode", "content": {}},
        {
            "__class__": "methodcaller",
            "__module__": "operator",
            "__loader__": "OperatorFuncNode",
            "content": {},
        },
        {
            "__class__": "LinearRegression",
            "__module__": "sklearn.linear_model._base",
            "__loader__": "SomeFutureNode",
        },
        {"__class__": "system", "__module__": "os", "__loader__": "TypeNode"},
        {"__class__": "system", "__module__": "os", "__loader__": "FunctionNode"},
        {"__class__": "ndarray", "__module__": "os", "__loader__": "NdArrayNode"},
        {"__loader__": "ObjectNode", "__class__": ["not", "a", "name"], "__module__": "os"},
        {"__class__": "str", "__module__": "os", "__loader__": "JsonNode", "content": "1"},
    ],
    ids=[
        "method",
        "partial",
        "operator",
        "unknown-loader",
        "type-of-function",
        "function-outside-list",
        "array-named-elsewhere",
        "nameless",
        "json-elsewhere",
    ],
)
def test_loaders_that_reach_for_callables_or_unknown_names_are_refused(node):
    data = gadgets.skops_with_gadget(node)
    assert refused_names(_schema(data))
    with pytest.raises(UntrustedTypes):
        load_skops(data)


def test_a_function_parameter_is_accepted_only_from_the_named_numeric_list():
    X = gadgets.X_TRAIN
    good = FunctionTransformer(np.log1p).fit(X)
    assert np.allclose(load_skops(skops.io.dumps(good)).transform(X), np.log1p(X))
    evil = FunctionTransformer(os.system).fit(X)  # called with the input at predict time
    with pytest.raises(UntrustedTypes, match=r"(posix|os)\.system \("):
        load_skops(skops.io.dumps(evil))


def test_a_custom_class_loads_only_when_named_exactly(tmp_path):
    data = skops.io.dumps(CustomScaler().fit(gadgets.X_TRAIN))
    name = f"{__name__}.CustomScaler"
    with pytest.raises(UntrustedTypes, match="CustomScaler"):
        load_skops(data)
    model = load_skops(data, extra_classes=trusted_class_names(name))
    assert isinstance(model, CustomScaler)
    pickled = gadgets.joblib_with(CustomScaler().fit(gadgets.X_TRAIN))
    with pytest.raises(UntrustedGlobal, match="CustomScaler"):
        load_pickle(io.BytesIO(pickled))
    assert isinstance(
        load_pickle(io.BytesIO(pickled), extra_classes=trusted_class_names(name)), CustomScaler
    )


@pytest.mark.parametrize(
    "setting", ["tests", "tests.unit", "os.system", "numpy.testing", f"{__name__}.missing"]
)
def test_the_escape_hatch_takes_classes_never_modules_or_functions(setting):
    with pytest.raises(ValueError, match="not an importable class"):
        trusted_class_names(setting)


def test_trust_policy_reads_its_config():
    from config import load_config

    config = load_config(
        {"TRUSTED_MODEL_CLASSES": f"{__name__}.CustomScaler, ", "ALLOW_PICKLE": "false"}
    )
    policy = TrustPolicy.from_config(config)
    assert policy.extra_classes == {f"{__name__}.CustomScaler"}
    assert policy.allow_pickle is False


def test_a_zip_bomb_schema_is_refused_before_it_is_inflated():
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("schema.json", "w", force_zip64=True) as member,
    ):
        chunk = b" " * (1 << 20)
        for _ in range(1024):  # 1 GiB of whitespace: about 1 MB stored
            member.write(chunk)
    data = buffer.getvalue()
    assert len(data) < 2 * 1024**2
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeArchive, match="uncompressed"):
            load_skops(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2


def test_member_count_and_schema_size_are_bounded():
    data = skops.io.dumps(gadgets.fitted_pipeline())
    members = len(zipfile.ZipFile(io.BytesIO(data)).namelist())
    with pytest.raises(UnsafeArchive, match="members"):
        load_skops(data, limits=SkopsLimits(max_members=members - 1))
    with pytest.raises(UnsafeArchive, match=r"schema\.json"):
        load_skops(data, limits=SkopsLimits(max_schema_bytes=100))
    assert load_skops(data, limits=SkopsLimits(max_members=members)) is not None


@pytest.mark.parametrize("protocol", [-1, 0, 1, 99, "2", True, None])
def test_protocols_outside_the_reviewed_range_are_refused(protocol):
    data = skops.io.dumps(gadgets.fitted_pipeline())
    source = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(source.read("schema.json"))
    schema["protocol"] = protocol
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            payload = json.dumps(schema) if item.filename == "schema.json" else source.read(item)
            target.writestr(item, payload)
    from registry.errors import InvalidInput

    with pytest.raises(InvalidInput, match="protocol"):
        load_skops(out.getvalue())


# --- pickles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(gadgets.PICKLE_GADGETS))
def test_each_pickle_gadget_runs_code_under_plain_joblib(tmp_path, name):
    marker = tmp_path / "ran"
    data = gadgets.joblib_with(gadgets.PICKLE_GADGETS[name](marker))
    joblib.load(io.BytesIO(data))
    assert marker.exists()


@pytest.mark.parametrize("where", ["top-level", "attribute", "object-array"])
@pytest.mark.parametrize("name", sorted(gadgets.PICKLE_GADGETS))
def test_each_pickle_gadget_is_refused_with_its_global_named(tmp_path, name, where):
    marker = tmp_path / "ran"
    gadget = gadgets.PICKLE_GADGETS[name](marker)
    if where != "top-level":
        gadget = gadgets.pipeline_hiding(gadget, in_object_array=where == "object-array")
    with pytest.raises(UntrustedGlobal) as refused:
        load_pickle(io.BytesIO(gadgets.joblib_with(gadget)))
    named = refused.value.errors["artifact"].removeprefix("untrusted global: ")
    function = gadgets.PICKLE_GADGETS[name](marker).function
    assert named.rsplit(".", 1)[-1] == function.__name__
    assert not marker.exists()


def test_a_compressed_joblib_file_loads_through_the_same_checks(tmp_path):
    marker = tmp_path / "ran"
    for compress in (3, ("lzma", 3)):
        buffer = io.BytesIO()
        joblib.dump(gadgets.fitted_pipeline(), buffer, compress=compress)
        model = load_pickle(io.BytesIO(buffer.getvalue()))
        assert model.predict(gadgets.X_TRAIN[:2]).shape == (2,)
        evil = io.BytesIO()
        joblib.dump(
            gadgets.pipeline_hiding(gadgets.PICKLE_GADGETS["os.system"](marker)),
            evil,
            compress=compress,
        )
        with pytest.raises(UntrustedGlobal, match="system"):
            load_pickle(io.BytesIO(evil.getvalue()))
    assert not marker.exists()


def test_the_first_loads_of_a_process_may_run_concurrently():
    """Building the allowlist imports scikit-learn's modules: several threads loading at once
    in a fresh process (concurrent registrations) must all get the same answer."""
    import subprocess
    import sys

    script = """
import io, joblib
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from sklearn.linear_model import LinearRegression
from serving.formats import deserialize
from serving.safeload import TrustPolicy
buffer = io.BytesIO()
joblib.dump(LinearRegression().fit(np.eye(3), [1.0, 2.0, 3.0]), buffer)
def load(_):
    return type(deserialize(io.BytesIO(buffer.getvalue()), "joblib",
                            trust=TrustPolicy(allow_pickle=True))).__name__
with ThreadPoolExecutor(16) as pool:
    print(sorted(set(pool.map(load, range(32)))))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(__import__("pathlib").Path(__file__).parents[2]),
    )
    assert done.stdout.strip() == "['LinearRegression']", done.stderr[-3000:]


def test_a_trusted_class_this_server_cannot_import_is_named(tmp_path, monkeypatch):
    """A pickle of a class from a package this server lacks (trusted on the publisher's side,
    or by an older TRUSTED_MODEL_CLASSES): the refusal names the class, as skops does."""
    import importlib
    import sys

    module = tmp_path / "vanishing_models.py"
    module.write_text(
        "from sklearn.preprocessing import StandardScaler\n"
        "class Scaler(StandardScaler):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanishing_models

    buffer = io.BytesIO()
    joblib.dump(vanishing_models.Scaler().fit(np.ones((3, 2))), buffer)
    monkeypatch.delitem(sys.modules, "vanishing_models")
    module.unlink()
    importlib.invalidate_caches()
    with pytest.raises(InvalidInput) as refused:
        load_pickle(
            io.BytesIO(buffer.getvalue()), extra_classes=frozenset({"vanishing_models.Scaler"})
        )
    assert refused.value.errors == {"artifact": "cannot import vanishing_models.Scaler"}
    assert "vanishing_models.Scaler" in refused.value.detail
    assert "ModuleNotFoundError" in refused.value.detail
