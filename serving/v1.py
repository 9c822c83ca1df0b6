"""KServe V1 / TF Serving REST prediction, so their clients work against modelreg.

- `POST /v1/models/<name>:predict`, `POST /v1/models/<name>/versions/<v>:predict`: a body of
  `{"instances": [...]}` (rows, or objects keyed by feature name) answers
  `{"predictions": [...]}`; TF Serving's columnar `{"inputs": {...}}` answers
  `{"outputs": [...]}`. `signature_name` is accepted (a model has one signature).
- `GET /v1/models/<name>[/versions/<v>]`: KServe's `{"name", "ready"}` and TF Serving's
  `model_version_status`.

`<v>` is a version number or an alias; without one the default alias rule applies
(`production`, else `latest`). Errors are `{"error": "..."}` (input validation is 400).
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, g, request

from registry.access import requires
from registry.answers import Answer
from registry.endpoints import json_answer, request_body
from registry.errors import InvalidInput, ModelregError
from registry.http import app_services, json_response
from registry.problems import problem_for, to_response
from serving import native
from serving.api_docs import (
    DEFAULT_VERSION_NOTE,
    INFER_ERRORS,
    V1_MODEL_STATUS,
    V1_PREDICT_REQUEST,
    V1_PREDICT_RESPONSE,
    v1_endpoint,
)
from serving.content_coding import decode_content
from serving.dataplane import Batch, DataPlane, Inference, UnitKey
from serving.inputs import decode_predict_document, parse_predict_json
from serving.loader import Servable, to_jsonable
from serving.unit_keys import from_environ

bp = Blueprint("v1", __name__)

_KEYS = ("instances", "inputs")


@bp.errorhandler(Exception)
def _v1_error(error: Exception) -> Response:
    problem = problem_for(error, g.get("request_id"))
    status = 400 if problem.status == 422 else problem.status
    response = json_response({"error": problem.detail}, status)
    for key, value in problem.headers:
        response.headers[key] = value
    if status == 503:
        response.headers["Retry-After"] = "1"
    return response


def _payload(doc: dict[str, Any]) -> str:
    """Which of instances / inputs the body carries (exactly one)."""
    signature = doc.pop("signature_name", None)
    if signature is not None and type(signature) is not str:
        raise InvalidInput("'signature_name' must be a string", {"signature_name": "not a string"})
    unknown = [k[:64] for k in doc if k not in _KEYS]
    if unknown:
        raise InvalidInput(
            f"unknown key(s) {unknown}: send 'instances' (or TF Serving's 'inputs')",
            {k: "unknown key" for k in unknown},
        )
    present = [k for k in _KEYS if k in doc]
    if len(present) != 1:
        raise InvalidInput(
            "send exactly one of 'instances' or 'inputs'",
            {"instances": "expected exactly one of instances, inputs"},
        )
    return present[0]


def decoder(
    body: bytes, content_encoding: str | None, limit: int, keys: list[str] | None = None
) -> Any:
    """The V1 decoder; `keys` receives the payload key ('instances' or 'inputs')."""
    found = [] if keys is None else keys

    def decode(servable: Servable) -> Batch:
        raw = decode_content(body, content_encoding, limit) if content_encoding else body
        doc = parse_predict_json(raw, servable.plan)
        found.append(_payload(doc))
        decoded = decode_predict_document(doc, servable.plan)
        return Batch(decoded.X, (decoded.method,), decoded.n_rows, found[0])

    decode.replay = ("v1", body, content_encoding, limit)  # type: ignore[attr-defined]
    return decode


def predict_answer(
    dataplane: DataPlane,
    name: str,
    version: str | None,
    body: bytes,
    *,
    content_encoding: str | None,
    max_body_bytes: int,
    unit: UnitKey | None = None,
) -> Answer:
    """A V1 predict's 200 answer (failures raise their domain errors)."""
    keys: list[str] = []
    decode = decoder(body, content_encoding, max_body_bytes, keys)

    def encode(inference: Inference) -> bytes:
        field = "outputs" if keys[0] == "inputs" else "predictions"
        return orjson.dumps({field: to_jsonable(inference.outputs[0])}, option=native.JSON_OPTIONS)

    served = dataplane.infer(name, version, decode, encode, unit=unit)
    headers = [("Content-Type", native.JSON), *native.model_headers(served.inference)]
    return Answer(200, headers, served.payload, str(served.inference.version))


def _predict(name: str, version: str | None) -> Response:
    native.check_media_type(request.mimetype)
    services = app_services()
    body = request.get_data(cache=False)
    answer = predict_answer(
        services.dataplane,
        name,
        version,
        body,
        content_encoding=request.headers.get("Content-Encoding"),
        max_body_bytes=services.config.MAX_PREDICT_BODY_BYTES,
        unit=from_environ(request.environ, body),
    )
    return to_response(answer)


def _status(name: str, version: str | None) -> Response:
    dataplane = app_services().dataplane
    resolution = dataplane.resolve(name, version)  # unknown model or version: 404
    number = str(resolution.spec.version)
    try:
        dataplane.load(resolution)
    except ModelregError as error:
        ready, state, code, message = False, "UNKNOWN", "UNAVAILABLE", error.detail
    else:
        ready, state, code, message = True, "AVAILABLE", "OK", ""
    body = {
        "name": name,
        "ready": ready,
        "model_version_status": [
            {
                "version": number,
                "state": state,
                "status": {"error_code": code, "error_message": message},
            }
        ],
    }
    headers = dict(native.resolution_headers(resolution))
    return json_response(body, 200 if ready else 503, headers)


_OK = {200: json_answer("The predictions.", V1_PREDICT_RESPONSE)}
_STATUS = {200: json_answer("Loaded and ready.", V1_MODEL_STATUS)}
_BODY = request_body(V1_PREDICT_REQUEST)


@v1_endpoint(
    summary="V1 predict (default version)",
    body=_BODY,
    responses=_OK,
    errors=INFER_ERRORS,
    description=DEFAULT_VERSION_NOTE,
)
@bp.post("/v1/models/<name>:predict")
@requires("reader")
def predict(name: str) -> Response:
    return _predict(name, None)


@v1_endpoint(summary="V1 predict (a version)", body=_BODY, responses=_OK, errors=INFER_ERRORS)
@bp.post("/v1/models/<name>/versions/<version>:predict")
@requires("reader")
def predict_version(name: str, version: str) -> Response:
    return _predict(name, version)


@v1_endpoint(
    summary="V1 model status (default version)",
    responses=_STATUS,
    errors=(401, 403, 404, 503),
    description=DEFAULT_VERSION_NOTE,
)
@bp.get("/v1/models/<name>")
@requires("reader")
def status(name: str) -> Response:
    return _status(name, None)


@v1_endpoint(summary="V1 model status (a version)", responses=_STATUS, errors=(401, 403, 404, 503))
@bp.get("/v1/models/<name>/versions/<version>")
@requires("reader")
def version_status(name: str, version: str) -> Response:
    return _status(name, version)
