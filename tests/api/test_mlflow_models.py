"""Model directories written by `mlflow.sklearn.save_model`, registered as they are from a zip
or tar.gz (HTTP, the client, the CLI): signature and input example taken from MLmodel, the
model file judged like any upload of its format, hostile archives refused with a 422."""

from __future__ import annotations

import io
import json
import pathlib
import shutil
import tarfile
import zipfile

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from registry.client import Client
from tests.api.test_v2 import colors
from tests.conftest import make_config
from tests.helpers import problem

mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
from mlflow.models import infer_signature  # noqa: E402

FRAME = pd.DataFrame({"a": [0.1, 0.5, 0.9, 1.3] * 5, "b": [1.0, 2.0, 3.0, 4.5] * 5})
LABELS = [0, 0, 1, 1] * 5
MODEL = LogisticRegression().fit(FRAME, LABELS)
FORMATS = {"skops": "skops", "pickle": "joblib", "cloudpickle": "joblib"}


class _Marker:
    """Unpickling this object creates a file: the proof that code ran."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, pathlib.Path]:
    """One directory per serialization format, written by mlflow itself."""
    root = tmp_path_factory.mktemp("mlflow")
    out = {}
    for serialization in FORMATS:
        path = root / serialization
        mlflow_sklearn.save_model(
            MODEL,
            str(path),
            serialization_format=serialization,
            signature=infer_signature(FRAME, MODEL.predict(FRAME)),
            input_example=FRAME.head(3),
        )
        out[serialization] = path
    return out


def packed(directory: pathlib.Path, kind: str, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in files:
                archive.write(file, prefix + file.relative_to(directory).as_posix())
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for file in files:
                archive.add(file, prefix + file.relative_to(directory).as_posix())
    return buffer.getvalue()


def upload(client, name: str, data: bytes, filename: str, metadata: dict | None = None):
    parts = {"artifact": (io.BytesIO(data), filename)}
    if metadata is not None:
        parts["metadata"] = json.dumps(metadata)
    return client.post(f"/models/{name}/versions", data=parts, content_type="multipart/form-data")


def refused(response, fragment: str, status: int = 422) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = problem(response)
    text = json.dumps(body)
    assert fragment in text, body
    return body


@pytest.fixture
def make_app(tmp_path):
    from manage import create_app

    apps = []

    def build(**overrides):
        app = create_app(make_config(tmp_path / str(len(apps)), **overrides))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["modelreg"].engine.dispose()


# ---- what registers ------------------------------------------------------------------------


@pytest.mark.parametrize("serialization", list(FORMATS))
@pytest.mark.parametrize(("kind", "filename"), [("zip", "m.zip"), ("tgz", "m.tar.gz")])
def test_a_saved_model_directory_registers_with_its_signature_and_example(
    make_app, saved, serialization, kind, filename
):
    client = make_app(ALLOW_PICKLE=True).test_client()
    response = upload(client, "clf", packed(saved[serialization], kind, "model/"), filename)
    assert response.status_code == 201, response.get_data(as_text=True)
    record = response.get_json()
    assert record["format"] == FORMATS[serialization]
    assert record["signature"]["feature_names"] == ["a", "b"]
    assert record["signature"]["n_features"] == 2
    assert record["signature"]["classes"] == [0, 1]
    expected = FRAME.head(3).to_dict(orient="records")
    assert len(record["input_example"]) == 3
    for got, want in zip(record["input_example"], expected, strict=True):
        assert got.keys() == want.keys()
        assert np.allclose(list(got.values()), list(want.values()), rtol=1e-12)
    assert record["source"]["run"].startswith("mlflow:")
    assert serialization in record["source"]["code"]
    # the stored artifact is the model file itself, its sha256 checked on every load
    stored = client.get("/models/clf/versions/1/artifact").data
    inner = {"skops": "model.skops"}.get(serialization, "model.pkl")
    assert stored == (saved[serialization] / inner).read_bytes()
    # it serves, and it promotes (the input example is predicted before the alias moves)
    answer = client.post("/models/clf/1/predict", json={"instances": expected})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["predictions"] == MODEL.predict(FRAME.head(3)).tolist()
    assert client.post("/models/clf/versions/1/promote", json={}).status_code == 200


def test_string_columns_become_typed_signature_inputs(make_app, tmp_path):
    model = colors()
    frame = pd.DataFrame({"color": ["red", "green", "blue"], "size": [1.0, 2.0, 3.5]})
    path = tmp_path / "colors"
    mlflow_sklearn.save_model(
        model,
        str(path),
        serialization_format="skops",
        signature=infer_signature(frame, model.predict(frame)),
        input_example=frame,
    )
    client = make_app().test_client()
    record = upload(client, "colors", packed(path, "zip"), "colors.zip").get_json()
    assert record["signature"]["inputs"] == [
        {"name": "color", "type": "string"},
        {"name": "size", "type": "double"},
    ]
    answer = client.post("/models/colors/1/predict", json={"instances": record["input_example"]})
    assert np.allclose(answer.get_json()["predictions"], model.predict(frame), rtol=1e-9)


def test_the_publishers_metadata_wins_and_format_mlflow_names_the_archive(make_app, saved):
    client = make_app().test_client()
    metadata = {
        "format": "mlflow",
        "description": "from mlflow",
        "source": {"run": "my-run"},
        "input_example": [[0.2, 1.5]],
    }
    response = upload(client, "clf", packed(saved["skops"], "zip"), "anything.bin", metadata)
    assert response.status_code == 201, response.get_data(as_text=True)
    record = response.get_json()
    assert record["description"] == "from mlflow" and record["input_example"] == [[0.2, 1.5]]
    assert record["source"]["run"] == "my-run" and "skops" in record["source"]["code"]


def test_the_client_and_the_cli_register_a_directory(make_app, saved, tmp_path, monkeypatch):
    api = Client.for_app(make_app())
    record = api.register("clf", saved["skops"])
    assert record["format"] == "skops" and record["signature"]["feature_names"] == ["a", "b"]
    archive = tmp_path / "clf.tar.gz"
    archive.write_bytes(packed(saved["skops"], "tgz"))
    assert api.register("clf", archive)["version"] == 2

    from manage import cli

    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    for name in ("DATABASE_URL", "STORAGE_URL", "INSTANCE_PATH", "MODELREG_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["register", "clf", str(saved["skops"])])
    assert result.exit_code == 0, result.output
    assert "registered clf version 1" in result.output


# ---- the model file meets the same judgement as any other upload -------------------------


def test_a_pickled_model_is_refused_when_pickles_are_off(make_app, saved):
    client = make_app(ALLOW_PICKLE=False).test_client()
    for serialization in ("pickle", "cloudpickle"):
        response = upload(client, "clf", packed(saved[serialization], "zip"), "m.zip")
        refused(response, "ALLOW_PICKLE")
    assert upload(client, "clf", packed(saved["skops"], "zip"), "m.zip").status_code == 201


def test_a_hostile_pickle_inside_is_judged_before_anything_runs(make_app, saved, tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile"
    shutil.copytree(saved["pickle"], hostile)
    joblib.dump(_Marker(marker), hostile / "model.pkl")
    client = make_app(ALLOW_PICKLE=True).test_client()
    refused(upload(client, "evil", packed(hostile, "zip"), "m.zip"), "pathlib")
    assert not marker.exists()
    assert client.get("/models/evil").status_code == 404


# ---- hostile and unsupported archives ---------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _members(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def _mlmodel(directory: pathlib.Path) -> dict:
    return yaml.safe_load((directory / "MLmodel").read_text())


def test_path_traversal_is_refused(make_app, saved):
    client = make_app().test_client()
    members = {**_members(saved["skops"]), "../../escape.txt": b"x"}
    refused(upload(client, "m", _zip(members), "m.zip"), "path traversal")
    mlmodel = _mlmodel(saved["skops"])
    mlmodel["flavors"]["sklearn"]["pickled_model"] = "../model.skops"
    members = {**_members(saved["skops"]), "MLmodel": yaml.safe_dump(mlmodel).encode()}
    refused(upload(client, "m", _zip(members), "m.zip"), "pickled_model")


def test_links_and_devices_in_a_tar_are_refused(make_app, saved):
    client = make_app().test_client()
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, data in _members(saved["skops"]).items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            link = tarfile.TarInfo("input_example.json.link")
            link.type, link.linkname = kind, "/etc/passwd"
            archive.addfile(link)
        refused(upload(client, "m", buffer.getvalue(), "m.tar.gz"), "not a plain file")


def test_a_symlink_in_a_zip_is_refused(make_app, saved):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in _members(saved["skops"]).items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("link")
        link.external_attr = 0o120777 << 16  # S_IFLNK
        archive.writestr(link, "/etc/passwd")
    client = make_app().test_client()
    refused(upload(client, "m", buffer.getvalue(), "m.zip"), "not a plain file")


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_compression_bombs_and_too_many_members_are_refused(make_app, saved, tmp_path, kind):
    client = make_app(MAX_UNPACKED_ARTIFACT_BYTES=200_000, MAX_ARTIFACT_MEMBERS=12).test_client()
    bomb = tmp_path / f"bomb-{kind}"
    shutil.copytree(saved["skops"], bomb)
    (bomb / "padding.bin").write_bytes(b"\0" * 5_000_000)
    refused(upload(client, "m", packed(bomb, kind), f"m.{kind}"), "unpacks to more than 200000")
    crowded = tmp_path / f"crowded-{kind}"
    shutil.copytree(saved["skops"], crowded)
    for index in range(20):
        (crowded / f"extra-{index}.txt").write_text("x")
    refused(upload(client, "m", packed(crowded, kind), f"m.{kind}"), "more than 12 members")


def test_two_mlmodel_files_are_refused(make_app, saved):
    client = make_app().test_client()
    members = _members(saved["skops"])
    twice = {**members, **{f"copy/{name}": data for name, data in members.items()}}
    refused(upload(client, "m", _zip(twice), "m.zip"), "2 MLmodel files")
    without = {k: v for k, v in members.items() if k != "MLmodel"}
    refused(upload(client, "m", _zip(without), "m.zip"), "no MLmodel file")


def test_a_pyfunc_only_model_is_refused_naming_the_flavor(make_app, saved):
    mlmodel = _mlmodel(saved["skops"])
    del mlmodel["flavors"]["sklearn"]
    members = {**_members(saved["skops"]), "MLmodel": yaml.safe_dump(mlmodel).encode()}
    client = make_app().test_client()
    body = refused(upload(client, "m", _zip(members), "m.zip"), "pyfunc-only models")
    assert "python_function" in body["errors"]["artifact.flavors"]


def test_not_an_archive_and_bad_mlmodel_are_422(make_app, saved):
    client = make_app().test_client()
    refused(upload(client, "m", b"just text", "m.zip"), "not a zip or tar.gz")
    members = {**_members(saved["skops"]), "MLmodel": b"flavors: [unclosed"}
    refused(upload(client, "m", _zip(members), "m.zip"), "not valid YAML")
    # YAML tags that build Python objects are not read (safe loader)
    evil = b"flavors: !!python/object/apply:os.system ['true']\n"
    refused(upload(client, "m", _zip({**members, "MLmodel": evil}), "m.zip"), "YAML")
