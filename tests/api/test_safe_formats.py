"""Pickles execute code on load: they are refused when ALLOW_PICKLE is false, at registration
and at serving time; skops artifacts are loaded with an explicit trusted-types policy."""

from __future__ import annotations

import io
import json
import pathlib

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

from config import ProductionConfig, load_config
from registry.services import versions as version_service
from tests import gadgets
from tests.conftest import fit_linear, make_config, skops_bytes
from tests.helpers import problem, register


class _Marker:
    """Unpickling this object creates a file: the proof that code ran."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


class HomemadeScaler(StandardScaler):
    """A type outside scikit-learn/NumPy/SciPy: skops must refuse it by name."""


def _evil_joblib(marker: pathlib.Path) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(_Marker(marker), buffer)
    return buffer.getvalue()


def _app(tmp_path, **overrides):
    from manage import create_app

    return create_app(make_config(tmp_path, **overrides))


def test_pickle_refused_at_registration_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    client = _app(tmp_path, ALLOW_PICKLE=False).test_client()
    response = register(client, "evil", _evil_joblib(marker))
    body = problem(response)
    assert response.status_code == 422
    assert "metadata.format" in body["errors"]
    assert not marker.exists()
    assert client.get("/models/evil").status_code == 404
    blobs = list((tmp_path / "instance" / "artifacts").rglob("sha256/*/*"))
    assert blobs == []


def test_pickle_already_in_registry_is_never_loaded_when_refused(tmp_path):
    """A joblib version that got into the registry (say, from a server that allowed pickles)
    is neither served nor promoted by a server with ALLOW_PICKLE=false."""
    marker = tmp_path / "pwned"
    app = _app(tmp_path, ALLOW_PICKLE=False)
    deps = app.extensions["modelreg"]
    staged = deps.store.stage()
    staged.write(_evil_joblib(marker))
    version_service.register_version(
        deps.uow,
        deps.store,
        lambda path, fmt: None,
        name="evil",
        staged=staged,
        meta=version_service.NewVersion(format="joblib"),
        actor="importer",
    )
    client = app.test_client()
    predicted = client.post("/models/evil/1/predict", json={"instances": [[1.0]]})
    assert predicted.status_code == 422
    assert "pickle" in problem(predicted)["detail"]
    promoted = client.post("/models/evil/versions/1/promote", json={})
    assert promoted.status_code == 422
    assert client.get("/models/evil").get_json()["aliases"] == {}
    assert not marker.exists()


def test_benign_joblib_served_when_pickles_allowed(tmp_path):
    client = _app(tmp_path, ALLOW_PICKLE=True).test_client()
    buffer = io.BytesIO()
    joblib.dump(fit_linear(), buffer)
    assert register(client, "ok", buffer.getvalue()).status_code == 201
    assert client.post("/models/ok/1/predict", json={"instances": [[1, 2, 3]]}).status_code == 200


def test_skops_with_untrusted_type_is_refused_with_the_type_named(tmp_path):
    client = _app(tmp_path, ALLOW_PICKLE=False).test_client()
    model = HomemadeScaler().fit(np.random.default_rng(0).random((10, 2)))
    response = register(
        client, "homemade", skops.io.dumps(model), {"format": "skops"}, filename="m.skops"
    )
    body = problem(response)
    assert response.status_code == 422
    assert "HomemadeScaler" in body["detail"]
    assert "HomemadeScaler" in body["errors"]["artifact"]
    assert client.get("/models/homemade").status_code == 404


def test_skops_with_sklearn_types_is_accepted_with_pickles_off(tmp_path):
    from sklearn.ensemble import RandomForestRegressor

    client = _app(tmp_path, ALLOW_PICKLE=False).test_client()
    rng = np.random.default_rng(0)
    X, y = rng.random((30, 4)), rng.random(30)
    forest = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(X, y)
    response = register(
        client,
        "forest",
        skops_bytes(forest),
        {"format": "skops", "input_example": X[:2].tolist()},
        filename="f.skops",
    )
    assert response.status_code == 201, response.get_json()
    predicted = client.post("/models/forest/1/predict", json={"instances": X[:3].tolist()})
    assert predicted.status_code == 200
    assert np.allclose(predicted.get_json()["predictions"], forest.predict(X[:3]))
    assert client.post("/models/forest/versions/1/promote", json={}).status_code == 200


def test_production_config_refuses_pickles_and_does_not_migrate():
    config = load_config({"MODELREG_ENV": "production", "DATABASE_URL": "sqlite:///x.db"})
    assert isinstance(config, ProductionConfig)
    assert config.ALLOW_PICKLE is False and config.AUTO_MIGRATE is False
    assert load_config({}).ALLOW_PICKLE is True


def test_metadata_part_may_be_sent_as_a_file(tmp_path):
    client = _app(tmp_path).test_client()
    response = client.post(
        "/models/filemeta/versions",
        data={
            "artifact": (io.BytesIO(skops_bytes(fit_linear())), "m.skops"),
            "metadata": (io.BytesIO(json.dumps({"description": "d"}).encode()), "meta.json"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["description"] == "d"
    assert response.get_json()["format"] == "skops"


# --- gadgets: artifacts whose loading runs code (tests/gadgets.py) ---------------------------

GADGET_CASES = [
    "numpy runstring (exec)",
    "os.system (process)",
    "scipy savemat (file)",
    "sklearn dump_svmlight_file (file)",
]


@pytest.mark.parametrize("name", GADGET_CASES)
def test_a_skops_gadget_is_refused_at_registration_by_name(tmp_path, name):
    marker = tmp_path / "ran"
    node = gadgets.SKOPS_GADGETS[name](marker)
    client = _app(tmp_path, ALLOW_PICKLE=False).test_client()
    response = register(
        client, "gadget", gadgets.skops_with_gadget(node), {"format": "skops"}, filename="m.skops"
    )
    body = problem(response)
    assert response.status_code == 422
    assert f"{node['__module__']}.{node['__class__']}" in body["errors"]["artifact"]
    assert not marker.exists()
    assert client.get("/models/gadget").status_code == 404


@pytest.mark.parametrize("where", ["attribute", "object-array"])
def test_a_pickle_gadget_is_refused_at_registration_even_with_pickles_allowed(tmp_path, where):
    marker = tmp_path / "ran"
    model = gadgets.pipeline_hiding(
        gadgets.PICKLE_GADGETS["os.system"](marker), in_object_array=where == "object-array"
    )
    client = _app(tmp_path, ALLOW_PICKLE=True).test_client()
    response = register(client, "gadget", gadgets.joblib_with(model))
    body = problem(response)
    assert response.status_code == 422
    assert body["errors"]["artifact"].endswith(".system")
    assert not marker.exists()
    assert client.get("/models/gadget").status_code == 404


def _store_unjudged(app, name: str, data: bytes, fmt: str) -> None:
    """A version that got in before the current policy (or from an older server)."""
    deps = app.extensions["modelreg"]
    staged = deps.store.stage()
    staged.write(data)
    version_service.register_version(
        deps.uow,
        deps.store,
        lambda path, fmt: None,
        name=name,
        staged=staged,
        meta=version_service.NewVersion(format=fmt),
        actor="importer",
    )


@pytest.mark.parametrize("fmt", ["skops", "joblib"])
def test_a_stored_gadget_refuses_to_load_after_a_restart_and_to_be_promoted(tmp_path, fmt):
    marker = tmp_path / "ran"
    if fmt == "skops":
        data = gadgets.skops_with_gadget(gadgets.SKOPS_GADGETS["numpy runstring (exec)"](marker))
    else:
        data = gadgets.joblib_with(
            gadgets.pipeline_hiding(gadgets.PICKLE_GADGETS["numpy runstring"](marker))
        )
    _store_unjudged(_app(tmp_path, ALLOW_PICKLE=True), "old", data, fmt)

    client = _app(tmp_path, ALLOW_PICKLE=True).test_client()  # a restarted server
    predicted = client.post("/models/old/1/predict", json={"instances": [[1.0, 2.0, 3.0]]})
    body = problem(predicted)
    assert predicted.status_code == 422
    assert "runstring" in body["detail"]
    promoted = client.post("/models/old/versions/1/promote", json={})
    assert promoted.status_code == 422
    assert "runstring" in problem(promoted)["detail"]
    assert client.get("/models/old").get_json()["aliases"] == {}
    assert not marker.exists()


class CustomRegressor(LinearRegression):
    """A class of the user's own, trusted only by name (TRUSTED_MODEL_CLASSES)."""


def test_a_custom_class_registers_only_when_the_server_names_it(tmp_path):
    data = skops.io.dumps(CustomRegressor().fit(gadgets.X_TRAIN, gadgets.Y_TRAIN))
    refused = register(
        _app(tmp_path / "a").test_client(), "custom", data, {"format": "skops"}, filename="m.skops"
    )
    assert refused.status_code == 422
    client = _app(tmp_path / "b", TRUSTED_MODEL_CLASSES=f"{__name__}.CustomRegressor").test_client()
    accepted = register(client, "custom", data, {"format": "skops"}, filename="m.skops")
    assert accepted.status_code == 201, accepted.get_json()


def test_an_onnx_model_with_external_data_is_refused_and_reveals_nothing(tmp_path, monkeypatch):
    from tests.unit.test_safeload_structure import _external, _onnx_adding

    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.bin").write_bytes(b"\x00" * 8)
    client = _app(tmp_path).test_client()
    answers = []
    for location in ("exists.bin", "missing.bin"):
        response = register(
            client, "ext", _onnx_adding(_external(location)), {"format": "onnx"}, filename="m.onnx"
        )
        answers.append((response.status_code, problem(response)["errors"]))
    assert answers[0] == answers[1]
    assert answers[0][0] == 422
    assert "external data" in answers[0][1]["artifact"]
