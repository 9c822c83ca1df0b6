"""Clients generated from the served /openapi.json work against a real server.

openapi-python-client makes a package from the document: it is imported and used to register
a version (multipart), read it back and predict, and every answer must come back as the
generated model classes, not `parsed=None`. datamodel-code-generator makes pydantic models
from the same document, and the real answers must validate against them.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, modelreg_cli

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ROWS = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("generated-clients")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "false",
    }
    modelreg_cli("db", "upgrade", env=env)
    token = modelreg_cli("tokens", "create", "--name", "ci", "--role", "operator", env=env)
    process = ServerProcess(env, tmp_path, workers=1, threads=2, name="generated")
    process.token = token.strip()
    try:
        yield process
    finally:
        process.stop()


def _auth(server: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


@pytest.fixture(scope="module")
def document_file(server, tmp_path_factory) -> Path:
    answer = requests.get(f"{server.url}/openapi.json", timeout=30)
    assert answer.status_code == 200
    path = tmp_path_factory.mktemp("document") / "openapi.json"
    path.write_bytes(answer.content)
    return path


def _run(*command: str, cwd: Path) -> str:
    done = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(cwd)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def generated(document_file, tmp_path_factory) -> Iterator[object]:
    """The openapi-python-client package, imported from a temporary folder."""
    folder = tmp_path_factory.mktemp("openapi-python-client")
    output = _run(
        str(BIN / "openapi-python-client"),
        "generate",
        "--path",
        str(document_file),
        "--output-path",
        str(folder / "modelreg_client"),
        "--meta",
        "none",
        cwd=folder,
    )
    # The generator warns (and leaves out) whatever of the document it cannot model.
    assert "Warning" not in output and "Unable to" not in output, output
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("modelreg_client")
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m.split(".")[0] == "modelreg_client"]:
            del sys.modules[name]


def test_openapi_python_client_registers_reads_and_predicts(server, generated):
    client_module = generated
    api = importlib.import_module("modelreg_client.api")
    models = importlib.import_module("modelreg_client.models")
    types = importlib.import_module("modelreg_client.types")
    register = importlib.import_module(f"{api.__name__}.registry.register_version")
    get_version = importlib.import_module(f"{api.__name__}.registry.get_version")
    predict = importlib.import_module(f"{api.__name__}.serving.predict")
    client = client_module.AuthenticatedClient(
        base_url=server.url, token=server.token, raise_on_unexpected_status=True
    )

    model = fit_linear()
    body = models.RegisterVersionBody(
        artifact=types.File(payload=joblib_bytes(model), file_name="m.joblib"),
        metadata=json.dumps({"format": "joblib", "tags": {"team": "pricing"}}),
    )
    created = register.sync_detailed("price", client=client, body=body)
    assert created.status_code == 201, created.content
    assert isinstance(created.parsed, models.VersionOut)
    assert created.parsed.version == 1
    assert created.parsed.tags.additional_properties == {"team": "pricing"}

    fetched = get_version.sync_detailed("price", "1", client=client)
    assert isinstance(fetched.parsed, models.VersionOut)
    assert fetched.parsed.sha256 == created.parsed.sha256
    assert fetched.parsed.size == created.parsed.size

    answer = predict.sync_detailed(
        "price", "1", client=client, body=models.PredictInstances(instances=ROWS)
    )
    assert answer.status_code == 200, answer.content
    assert isinstance(answer.parsed, models.PredictResponse)
    assert answer.parsed.version == 1
    expected = model.predict(ROWS)
    assert len(answer.parsed.predictions) == len(expected)
    for got, want in zip(answer.parsed.predictions, expected, strict=True):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)

    refused = predict.sync_detailed(
        "price", "1", client=client, body=models.PredictInstances(instances=[[1.0]])
    )
    assert refused.status_code == 422
    assert isinstance(refused.parsed, models.Problem)
    assert refused.parsed.status == 422


def test_datamodel_code_generator_models_validate_real_answers(server, document_file, tmp_path):
    output = tmp_path / "modelreg_models.py"
    _run(
        str(BIN / "datamodel-codegen"),
        "--input",
        str(document_file),
        "--input-file-type",
        "openapi",
        "--output-model-type",
        "pydantic_v2.BaseModel",
        "--output",
        str(output),
        cwd=tmp_path,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        models = importlib.import_module("modelreg_models")
    finally:
        sys.path.remove(str(tmp_path))
    model = fit_linear()
    registered = requests.post(
        f"{server.url}/models/houses/versions",
        files={
            "artifact": ("m.joblib", joblib_bytes(model)),
            "metadata": (None, json.dumps({"format": "joblib", "input_example": ROWS})),
        },
        headers=_auth(server),
        timeout=60,
    )
    assert registered.status_code == 201, registered.text
    version = models.VersionOut.model_validate(registered.json())
    assert version.version == 1
    request = models.PredictRequest.model_validate({"instances": ROWS, "method": "predict"})
    assert isinstance(request.root, models.PredictInstances)
    answer = requests.post(
        f"{server.url}/models/houses/1/predict",
        data=request.root.model_dump_json(exclude_none=True),
        headers={"Content-Type": "application/json", **_auth(server)},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    predicted = models.PredictResponse.model_validate(answer.json())
    for got, want in zip(predicted.predictions, model.predict(ROWS), strict=True):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    listing = requests.get(f"{server.url}/models", headers=_auth(server), timeout=30).json()
    assert "houses" in {m.name for m in models.ModelList.model_validate(listing).models}
