"""Open Inference Protocol (KServe V2 / Triton HTTP) on top of the serving runtime.

Stock V2 clients (tritonclient, KServe's InferenceRESTClient, plain curl) work against modelreg:

- `GET /v2`, `GET /v2/health/live`, `GET /v2/health/ready` (public; ready = the database answers).
- `GET /v2/models/<name>[/versions/<v>]` metadata, `.../ready`, `POST .../infer`.
- Extensions: `binary_tensor_data`, `model_repository` (index, load = warm, unload = evict) and
  `statistics` (`GET /v2/models[/<name>[/versions/<v>]]/stats`).

Versions: `<v>` is a version number or an alias (or `latest`). Without one, the default alias
applies: `production` when the model has it, else `latest`. "This model has no `production`" is
remembered for ALIAS_REFRESH_SECONDS (the documented staleness bound for aliases), so a model
without the alias does not cost a registry query per request.

Inputs (see `to_matrix`): one tensor of shape [N, F] (any name; the metadata calls it "input"),
or one tensor per feature named by the model's feature names, each [N] or [N, 1] (column
layout; also forced by the request's `parameters.content_type == "pd"`). Outputs: `predict`
(default) and `predict_proba` for models that have it.

Errors on these routes are `{"error": "<message>"}`: 400 bad request (including input
validation, which the native API answers 422), 401/403 auth, 404 unknown model or version,
503 dependency or integrity failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from importlib import metadata
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge
from werkzeug.routing import Map

from registry.access import public, requires
from registry.answers import Answer
from registry.api_docs import VERSION_HEADERS
from registry.endpoints import json_answer, request_body, undocumented
from registry.errors import MalformedRequest, ModelregError, NotFound
from registry.http import app_services, json_response
from registry.problems import problem_for, to_response
from serving import native
from serving.api_docs import (
    DEFAULT_VERSION_NOTE,
    INFER_BODY,
    INFER_ERRORS,
    INFER_OK,
    V2_HEADER_LENGTH,
    V2_LIVE,
    V2_LOAD_REQUEST,
    V2_LOAD_RESPONSE,
    V2_MODEL_METADATA,
    V2_MODEL_READY,
    V2_MODEL_STATS,
    V2_READY,
    V2_REPOSITORY_INDEX,
    V2_REPOSITORY_INDEX_REQUEST,
    V2_SERVER_METADATA,
    V2_UNLOAD_RESPONSE,
    v2_endpoint,
)
from serving.dataplane import Batch, DataPlane, Inference, UnitKey
from serving.loader import Servable
from serving.ops import database_check
from serving.tensor_inputs import FIELD, INPUT_NAME, to_matrix
from serving.unit_keys import from_environ
from serving.v2_codec import (
    HEADER_LENGTH,
    InferRequest,
    RequestedOutput,
    datatype_of,
    decode_content,
    decode_request,
    encode_output,
    encode_response,
)

log = logging.getLogger(__name__)

bp = Blueprint("v2", __name__)

SERVER_NAME = "modelreg"
EXTENSIONS = ("binary_tensor_data", "model_repository", "statistics")
OUTPUTS = ("predict", "predict_proba")
_ONNX_DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


@cache
def server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


# --------------------------------------------------------------------------- helpers


def _dataplane() -> DataPlane:
    return app_services().dataplane


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    response = json_response({"error": message}, status)
    for key, value in headers:
        response.headers[key] = value
    return response


def _allowed() -> Callable[[str], bool]:
    identity = g.get("identity")
    return identity.may_use_model if identity is not None else (lambda name: True)


def _optional_json() -> dict[str, Any]:
    raw = request.get_data(cache=False)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedRequest(f"the request is not valid JSON: {error}") from None
    if type(body) is not dict:
        raise MalformedRequest("the request body must be a JSON object")
    return body


# --------------------------------------------------------------------------- errors


@bp.errorhandler(RequestEntityTooLarge)  # the app registers this code: override it here
@bp.errorhandler(Exception)
def _v2_error(error: Exception) -> Response:
    """The app's one error mapping (registry/problems.py), in V2's `{"error": ...}` shape;
    input validation is 400 here (V2 clients expect it), 422 natively."""
    problem = problem_for(error, g.get("request_id"))
    status = 400 if problem.status == 422 else problem.status
    headers = problem.headers
    if status == 503:
        headers = (("Retry-After", "1"), *headers)
    return _error(status, problem.detail, headers)


# --------------------------------------------------------------------------- server


@v2_endpoint(
    summary="Server metadata",
    responses={200: json_answer("Server metadata.", V2_SERVER_METADATA)},
)
@bp.get("/v2")
@public
def server_metadata() -> Response:
    return json_response(
        {"name": SERVER_NAME, "version": server_version(), "extensions": EXTENSIONS}
    )


@v2_endpoint(summary="Server liveness", responses={200: json_answer("Live.", V2_LIVE)})
@bp.get("/v2/health/live")
@public
def live() -> Response:
    return json_response({"live": True})


@v2_endpoint(
    summary="Server readiness",
    responses={
        200: json_answer("Ready.", V2_READY),
        503: json_answer("The database is unavailable.", V2_READY),
    },
)
@bp.get("/v2/health/ready")
@public
def ready() -> Response:
    check = database_check(app_services())  # bounded, like /readyz
    if check["status"] != "ok":
        detail = check.get("detail", check["status"])
        return json_response({"ready": False, "error": detail}, 503, {"Retry-After": "1"})
    return json_response({"ready": True})


# --------------------------------------------------------------------------- models


@v2_endpoint(
    summary="Model metadata (default version)",
    responses={
        200: json_answer(
            "Inputs, outputs and versions.", V2_MODEL_METADATA, headers=VERSION_HEADERS
        )
    },
    errors=(400, 401, 403, 404, 503),
    description=DEFAULT_VERSION_NOTE,
)
@bp.get("/v2/models/<name>")
@requires("reader")
def model_metadata(name: str) -> Response:
    return _metadata(name, None)


@v2_endpoint(
    summary="Model metadata (a version)",
    responses={
        200: json_answer(
            "Inputs, outputs and versions.", V2_MODEL_METADATA, headers=VERSION_HEADERS
        )
    },
    errors=(400, 401, 403, 404, 503),
)
@bp.get("/v2/models/<name>/versions/<version>")
@requires("reader")
def model_version_metadata(name: str, version: str) -> Response:
    return _metadata(name, version)


@v2_endpoint(
    summary="Model readiness (default version)",
    responses={
        200: json_answer("Loaded and ready.", V2_MODEL_READY, headers=VERSION_HEADERS),
        503: json_answer("The version cannot be loaded.", V2_MODEL_READY),
    },
    errors=(401, 403, 404),
    description=DEFAULT_VERSION_NOTE,
)
@bp.get("/v2/models/<name>/ready")
@requires("reader")
def model_ready(name: str) -> Response:
    return _ready(name, None)


@v2_endpoint(
    summary="Model readiness (a version)",
    responses={
        200: json_answer("Loaded and ready.", V2_MODEL_READY, headers=VERSION_HEADERS),
        503: json_answer("The version cannot be loaded.", V2_MODEL_READY),
    },
    errors=(401, 403, 404),
)
@bp.get("/v2/models/<name>/versions/<version>/ready")
@requires("reader")
def model_version_ready(name: str, version: str) -> Response:
    return _ready(name, version)


def _metadata(name: str, version: str | None) -> Response:
    dataplane = _dataplane()
    resolution, loaded = dataplane.warm(name, version)
    servable: Servable = loaded.extra
    plan = servable.plan
    number = resolution.spec.version
    body: dict[str, Any] = {
        "name": name,
        "versions": [str(n) for n in dataplane.ready_versions(name, number)],
        "platform": _platform(servable),
        "inputs": _input_metadata(servable),
        "outputs": _output_metadata(servable),
    }
    parameters: dict[str, Any] = {"version": str(number)}
    if plan.feature_names is not None:
        # One input per feature (each [N] or [N, 1]) is accepted too, named like these.
        parameters["feature_names"] = list(plan.feature_names)
    body["parameters"] = parameters
    return json_response(body, headers=dict(native.resolution_headers(resolution)))


def _platform(servable: Servable) -> str:
    if servable.format == "onnx":
        return "onnxruntime_onnx"
    if servable.format in ("xgboost", "lightgbm"):  # Triton FIL's names for these files
        return f"{servable.format}_{'json' if servable.format == 'xgboost' else 'text'}"
    return f"sklearn_{servable.format}"


_COLUMN_DATATYPES = {"double": "FP64", "long": "INT64", "boolean": "BOOL", "string": "BYTES"}


def _input_metadata(servable: Servable) -> list[dict[str, Any]]:
    """One [N, F] input for numeric models; for typed (string or mixed) columns, which no
    single tensor can carry, one [N, 1] input per feature with its own datatype."""
    plan = servable.plan
    if plan.column_types is not None and plan.feature_names is not None:
        return [
            {"name": name, "datatype": _COLUMN_DATATYPES[kind], "shape": [-1, 1]}
            for name, kind in zip(plan.feature_names, plan.column_types, strict=True)
        ]
    datatype = _input_datatype(servable)
    return [{"name": INPUT_NAME, "datatype": datatype, "shape": [-1, plan.n_features or -1]}]


def _input_datatype(servable: Servable) -> str:
    types = servable.input_types if servable.format == "onnx" else ()
    if types and all(t == "tensor(float)" for t in types):
        return "FP32"
    return "FP64"


def _output_metadata(servable: Servable) -> list[dict[str, Any]]:
    onnx = servable.output_types if servable.format == "onnx" else ()
    if servable.classes:
        predict = datatype_of(np.asarray(servable.classes))
    elif onnx:
        predict = _ONNX_DATATYPES.get(onnx[0], "FP32")
    else:
        predict = "FP64"
    outputs = [{"name": "predict", "datatype": predict, "shape": [-1]}]
    if "predict_proba" in servable.methods:
        proba = "FP32" if len(onnx) > 1 and onnx[1] == "tensor(float)" else "FP64"
        width = len(servable.classes) if servable.classes else -1
        outputs.append({"name": "predict_proba", "datatype": proba, "shape": [-1, width]})
    return outputs


def _ready(name: str, version: str | None) -> Response:
    dataplane = _dataplane()
    resolution = dataplane.resolve(name, version)  # unknown model/version: 404
    number = str(resolution.spec.version)
    headers = dict(native.resolution_headers(resolution))
    if dataplane.is_unloaded(resolution):
        message = f"unloaded; load it with POST /v2/repository/models/{name}/load"
        body = {"name": name, "version": number, "ready": False, "error": message}
        return json_response(body, 503, headers)
    try:
        dataplane.load(resolution)
    except ModelregError as error:
        return json_response(
            {"name": name, "version": number, "ready": False, "error": error.detail},
            503,
            {"Retry-After": "1", **headers},
        )
    return json_response({"name": name, "version": number, "ready": True}, 200, headers)


# --------------------------------------------------------------------------- inference


@v2_endpoint(
    summary="Inference (default version)",
    body=INFER_BODY,
    parameters=(V2_HEADER_LENGTH,),
    responses={200: INFER_OK},
    errors=INFER_ERRORS,
    description=DEFAULT_VERSION_NOTE,
)
@bp.post("/v2/models/<name>/infer")
@requires("reader")
def infer(name: str) -> Response:
    return _infer(name, None)


@v2_endpoint(
    summary="Inference (a version)",
    body=INFER_BODY,
    parameters=(V2_HEADER_LENGTH,),
    responses={200: INFER_OK},
    errors=INFER_ERRORS,
)
@bp.post("/v2/models/<name>/versions/<version>/infer")
@requires("reader")
def infer_version(name: str, version: str) -> Response:
    return _infer(name, version)


def _infer(name: str, version: str | None) -> Response:
    body = request.get_data(cache=False)
    answer = infer_answer(
        _dataplane(),
        name,
        version,
        body,
        content_encoding=request.headers.get("Content-Encoding"),
        header_length=request.headers.get(HEADER_LENGTH),
        max_body_bytes=app_services().config.MAX_PREDICT_BODY_BYTES,
        unit=from_environ(request.environ, body),
    )
    return to_response(answer)


def decoder(
    raw: bytes,
    content_encoding: str | None,
    header_length: str | None,
    limit: int,
    parsed: list[tuple[InferRequest, list[RequestedOutput]]] | None = None,
) -> Any:
    """The V2 infer decoder; `parsed` receives the request and its outputs for the encoder."""
    found: list[tuple[InferRequest, list[RequestedOutput]]] = [] if parsed is None else parsed

    def decode(servable: Servable) -> Batch:
        body = decode_content(raw, content_encoding, limit)
        decoded = decode_request(body, header_length, servable.plan.tensor_budget)
        outputs = _requested_outputs(decoded, servable)
        found.append((decoded, outputs))
        X = to_matrix(decoded, servable.plan)
        return Batch(X, tuple(o.name for o in outputs), int(X.shape[0]), FIELD)

    decode.replay = ("v2", raw, content_encoding, header_length, limit)  # type: ignore[attr-defined]
    return decode


def infer_answer(
    dataplane: DataPlane,
    name: str,
    version: str | None,
    raw: bytes,
    *,
    content_encoding: str | None,
    header_length: str | None,
    max_body_bytes: int,
    memory_only: bool = False,
    unit: UnitKey | None = None,
) -> Answer:
    """A V2 infer request's 200 answer, free of any transport (failures raise)."""
    # What decode learnt that encode needs (the request id, binary output choices).
    parsed: list[tuple[InferRequest, list[RequestedOutput]]] = []
    decode = decoder(raw, content_encoding, header_length, max_body_bytes, parsed)

    def encode(inference: Inference) -> tuple[bytes, int | None]:
        decoded, outputs = parsed[0]
        entries: list[dict[str, Any]] = []
        binaries: list[bytes] = []
        for output, values in zip(outputs, inference.outputs, strict=True):
            binary = decoded.binary_output if output.binary is None else output.binary
            entry, raw_output = encode_output(output.name, values, binary)
            entries.append(entry)
            if raw_output is not None:
                binaries.append(raw_output)
        header: dict[str, Any] = {"model_name": name, "model_version": str(inference.version)}
        if decoded.id is not None:
            header["id"] = decoded.id
        header["outputs"] = entries
        return encode_response(header, binaries)

    served = dataplane.infer(name, version, decode, encode, memory_only=memory_only, unit=unit)
    payload, length = served.payload
    headers = native.model_headers(served.inference)
    if length is None:
        return Answer(200, [("Content-Type", "application/json"), *headers], payload)
    headers.append((HEADER_LENGTH, str(length)))
    return Answer(200, [("Content-Type", "application/octet-stream"), *headers], payload)


def _requested_outputs(decoded: InferRequest, servable: Servable) -> list[RequestedOutput]:
    if not decoded.outputs:
        return [RequestedOutput("predict", None)]
    for output in decoded.outputs:
        if output.name not in OUTPUTS:
            raise MalformedRequest(
                f"unknown output {output.name[:64]!r}: this server offers "
                + ", ".join(o for o in OUTPUTS if o in servable.methods),
                {"outputs": "unknown output"},
            )
        if output.name not in servable.methods:
            raise MalformedRequest(
                f"this model has no {output.name} output (it offers "
                + ", ".join(o for o in OUTPUTS if o in servable.methods)
                + ")",
                {"outputs": f"{output.name} not supported by this model"},
            )
    return decoded.outputs


# --------------------------------------------------------------------------- tensors -> X


# --------------------------------------------------------------------------- repository


@v2_endpoint(
    summary="Repository index: loaded versions and load failures",
    body=request_body(V2_REPOSITORY_INDEX_REQUEST, required=False),
    responses={200: json_answer("The index.", V2_REPOSITORY_INDEX)},
    errors=(400, 401, 403, 413, 503),
)
@bp.post("/v2/repository/index")
@requires("reader")
def repository_index() -> Response:
    body = _optional_json()
    only_ready = body.get("ready", False)
    if type(only_ready) is not bool:
        raise MalformedRequest("'ready' must be true or false", {"ready": "expected a boolean"})
    dataplane = _dataplane()
    allowed = _allowed()
    index: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in dataplane.cached_models():
        if allowed(entry["name"]):
            index[(entry["name"], entry["version"])] = {
                "name": entry["name"],
                "version": str(entry["version"]),
                "state": "READY",
                "reason": "",
            }
    if not only_ready:
        for failure in dataplane.load_failures():
            key = (failure["name"], failure["version"])
            if key not in index and allowed(failure["name"]):
                index[key] = {
                    "name": failure["name"],
                    "version": str(failure["version"]),
                    "state": "UNAVAILABLE",
                    "reason": f"{failure['error']}: {failure['detail']}",
                }
    return json_response([index[key] for key in sorted(index)])


@v2_endpoint(
    summary="Load the model's default version",
    body=request_body(V2_LOAD_REQUEST, required=False),
    responses={200: json_answer("Loaded.", V2_LOAD_RESPONSE, headers=VERSION_HEADERS)},
    errors=(400, 401, 403, 404, 413, 503),
)
@bp.post("/v2/repository/models/<name>/load")
@requires("operator")
def repository_load(name: str) -> Response:
    parameters = _optional_json().get("parameters") or {}
    if type(parameters) is not dict:
        raise MalformedRequest("'parameters' must be an object", {"parameters": "not an object"})
    if "config" in parameters or any(str(k).startswith("file:") for k in parameters):
        raise MalformedRequest(
            "loading from a model configuration or files is not supported: register a version "
            "with POST /models/<name>/versions, then load it",
            {"parameters": "config and file: overrides are not supported"},
        )
    resolution, loaded = _dataplane().warm(name, None)
    return json_response(
        {
            "name": name,
            "version": str(loaded.key.version),
            "state": "READY",
            "load_seconds": loaded.load_seconds,
        },
        headers=dict(native.resolution_headers(resolution)),
    )


@v2_endpoint(
    summary="Unload the model's default version",
    responses={200: json_answer("Unloaded.", V2_UNLOAD_RESPONSE, headers=VERSION_HEADERS)},
    errors=(401, 403, 404, 503),
)
@bp.post("/v2/repository/models/<name>/unload")
@requires("operator")
def repository_unload(name: str) -> Response:
    resolution, evicted = _dataplane().unload(name, None)
    return json_response(
        {"name": name, "version": str(resolution.spec.version), "evicted": evicted},
        headers=dict(native.resolution_headers(resolution)),
    )


# --------------------------------------------------------------------------- statistics


@v2_endpoint(
    summary="Inference statistics of every model",
    responses={200: json_answer("Statistics.", V2_MODEL_STATS)},
    errors=(401, 403, 503),
)
@bp.get("/v2/models/stats")
@requires("reader")
def all_stats() -> Response:
    dataplane = _dataplane()
    allowed = _allowed()
    cached = [(e["name"], e["version"]) for e in dataplane.cached_models() if allowed(e["name"])]
    stats = dataplane.stats.model_stats(lambda name, version: allowed(name), cached)
    return json_response({"model_stats": stats})


@v2_endpoint(
    summary="Inference statistics of a model",
    responses={200: json_answer("Statistics.", V2_MODEL_STATS)},
    errors=(401, 403, 404, 503),
)
@bp.get("/v2/models/<name>/stats")
@requires("reader")
def model_stats(name: str) -> Response:
    dataplane = _dataplane()
    cached = [(e["name"], e["version"]) for e in dataplane.cached_models() if e["name"] == name]
    stats = dataplane.stats.model_stats(lambda model, version: model == name, cached)
    if not stats:  # nothing inferred or cached yet: the default version, if the model exists
        number = dataplane.resolve(name, None).spec.version
        stats = dataplane.stats.model_stats(lambda model, version: False, [(name, number)])
    return json_response({"model_stats": stats})


@v2_endpoint(
    summary="Inference statistics of a version",
    responses={200: json_answer("Statistics.", V2_MODEL_STATS)},
    errors=(401, 403, 404, 503),
)
@bp.get("/v2/models/<name>/versions/<version>/stats")
@requires("reader")
def model_version_stats(name: str, version: str) -> Response:
    dataplane = _dataplane()
    number = dataplane.resolve(name, version).spec.version
    stats = dataplane.stats.model_stats(
        lambda model, v: model == name and v == number, [(name, number)]
    )
    return json_response({"model_stats": stats})


# --------------------------------------------------------------------------- unknown routes

_ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@undocumented("not an operation: any other /v2 path is a V2 404 (or 405)")
@bp.route("/v2/<path:rest>", methods=_ALL_METHODS)
@public
def unknown_route(rest: str) -> Response:
    # V2 clients (tritonclient's get_model_config, say) decode every error as {"error": ...};
    # a path no V2 route matches is answered in that shape too, not as problem+json.
    allowed = _methods_of_other_routes(request.path)
    if allowed:  # the path exists, the method does not: this catch-all would hide the 405
        raise MethodNotAllowed(
            sorted(allowed), f"{request.method} is not allowed on {request.path[:128]}"
        )
    raise NotFound(f"no V2 endpoint at /v2/{rest[:128]}")


def _methods_of_other_routes(path: str) -> set[str]:
    """The methods the V2 routes other than the catch-all accept at `path` (empty: none
    matches). Built per call: only wrong paths and wrong methods get here."""
    catch_all = f"{bp.name}.{unknown_route.__name__}"
    rules = [
        rule.empty()
        for rule in current_app.url_map.iter_rules()
        if rule.endpoint.startswith(f"{bp.name}.") and rule.endpoint != catch_all
    ]
    return set(Map(rules).bind("localhost").allowed_methods(path))
