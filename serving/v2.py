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
import threading
import time
from collections.abc import Callable, Iterable
from functools import cache
from importlib import metadata
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Response, current_app, g, request
from sqlalchemy import text
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from registry.access import public, requires
from registry.api_docs import VERSION_HEADERS
from registry.endpoints import json_answer, request_body
from registry.errors import (
    DependencyUnavailable,
    InvalidInput,
    MalformedRequest,
    ModelregError,
    NotFound,
)
from registry.http import app_services
from registry.names import Reference
from registry.pagination import Page, decode_cursor
from registry.problems import status_for
from registry.services.versions import list_versions
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
from serving.cache import LoadedModel
from serving.inputs import InputPlan, columns_to_matrix, rows_to_matrix
from serving.loader import Servable
from serving.resolver import Resolution
from serving.runtime import ServingRuntime, call_model, parse_ref
from serving.v2_codec import (
    FLOAT_DATATYPES,
    HEADER_LENGTH,
    InferRequest,
    RequestedOutput,
    Tensor,
    datatype_of,
    decode_content,
    decode_request,
    encode_output,
    encode_response,
)
from storage import ArtifactNotFound, StorageError

log = logging.getLogger(__name__)

bp = Blueprint("v2", __name__)

SERVER_NAME = "modelreg"
EXTENSIONS = ("binary_tensor_data", "model_repository", "statistics")
DEFAULT_ALIAS = "production"
INPUT_NAME = "input"
OUTPUTS = ("predict", "predict_proba")
STATS_EXTRA = "v2_stats"
DEFAULT_ALIAS_EXTRA = "v2_default_alias"
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_NUMERIC_COLUMN_TYPES = frozenset({"double", "long"})
_NOT_NUMERIC = frozenset({"BYTES", "BOOL"})
_ONNX_DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
_MAX_LISTED_VERSIONS = 10_000
_extras_lock = threading.Lock()


@cache
def server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


# --------------------------------------------------------------------------- statistics


_SUCCESS, _FAIL, _QUEUE, _INPUT, _INFER, _OUTPUT = range(6)
_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


class _Counters:
    __slots__ = ("counts", "execution_count", "inference_count", "last_inference", "ns")

    def __init__(self) -> None:
        self.last_inference = 0
        self.inference_count = 0
        self.execution_count = 0
        self.counts = [0] * len(_DURATIONS)
        self.ns = [0] * len(_DURATIONS)


class InferenceStats:
    """Triton-style per-version inference statistics of one process; thread-safe.

    success = whole request (ns from the start of the view); queue = resolving the version and
    getting it from the model cache (a load on a miss); compute_input = decoding the request
    into the model's input; compute_infer = the model calls; compute_output = encoding the
    response. inference_count counts rows, execution_count requests. A failed request counts in
    `fail` only (once the version is known: an unknown model or version counts nowhere).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[tuple[str, int], _Counters] = {}

    def _counters(self, name: str, version: int) -> _Counters:
        counters = self._models.get((name, version))
        if counters is None:
            counters = self._models[(name, version)] = _Counters()
        return counters

    def record_success(
        self,
        name: str,
        version: int,
        *,
        rows: int,
        queue_ns: int,
        input_ns: int,
        infer_ns: int,
        output_ns: int,
        total_ns: int,
    ) -> None:
        now_ms = int(self._clock() * 1000)
        with self._lock:
            c = self._counters(name, version)
            c.last_inference = now_ms
            c.inference_count += rows
            c.execution_count += 1
            for index, ns in (
                (_SUCCESS, total_ns),
                (_QUEUE, queue_ns),
                (_INPUT, input_ns),
                (_INFER, infer_ns),
                (_OUTPUT, output_ns),
            ):
                c.counts[index] += 1
                c.ns[index] += ns

    def record_failure(self, name: str, version: int, total_ns: int) -> None:
        now_ms = int(self._clock() * 1000)
        with self._lock:
            c = self._counters(name, version)
            c.last_inference = now_ms
            c.counts[_FAIL] += 1
            c.ns[_FAIL] += total_ns

    def model_stats(
        self,
        keep: Callable[[str, int], bool] = lambda name, version: True,
        also: Iterable[tuple[str, int]] = (),
    ) -> list[dict[str, Any]]:
        """Entries whose (name, version) `keep` accepts, plus zero entries for `also`."""
        with self._lock:
            rows = {
                key: (c.last_inference, c.inference_count, c.execution_count, *c.counts, *c.ns)
                for key, c in self._models.items()
                if keep(*key)
            }
        for key in also:
            rows.setdefault(key, (0, 0, 0, *([0] * 2 * len(_DURATIONS))))
        n = len(_DURATIONS)
        return [
            {
                "name": name,
                "version": str(version),
                "last_inference": row[0],
                "inference_count": row[1],
                "execution_count": row[2],
                "inference_stats": {
                    kind: {"count": row[3 + i], "ns": row[3 + n + i]}
                    for i, kind in enumerate(_DURATIONS)
                },
                "batch_stats": [],
            }
            for (name, version), row in sorted(rows.items())
        ]


def inference_stats() -> InferenceStats:
    """This app's statistics, created on first use."""
    return _extra(STATS_EXTRA, InferenceStats)


class _MissingDefaultAlias:
    """Models known (for a short while) to have no default alias; bounded in size."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def get(self, name: str) -> float | None:
        return self._until.get(name)

    def remember(self, name: str, until: float) -> None:
        with self._lock:
            if len(self._until) >= self.MAX_ENTRIES:
                self._until.clear()
            self._until[name] = until

    def forget(self, name: str) -> None:
        if name in self._until:
            with self._lock:
                self._until.pop(name, None)


def _extra(key: str, factory: Callable[[], Any]) -> Any:
    extras = current_app.extensions.setdefault("modelreg.v2", {})
    value = extras.get(key)
    if value is None:
        with _extras_lock:
            value = extras.get(key)
            if value is None:
                value = extras[key] = factory()
    return value


# --------------------------------------------------------------------------- helpers


def _runtime() -> ServingRuntime:
    return app_services().serving


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(
        orjson.dumps(body, option=JSON_OPTIONS), status=status, mimetype="application/json"
    )
    if headers:
        response.headers.update(headers)
    return response


def _error(status: int, message: str) -> Response:
    response = _json({"error": message}, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    elif status == 503:
        response.headers["Retry-After"] = "1"
    return response


def resolve(runtime: ServingRuntime, name: str, version: str | None) -> Resolution:
    """`<v>` (number, alias or latest) or, without one, the default alias: production/latest."""
    if version is not None:
        return runtime.resolver.resolve(name, parse_ref(version))
    missing = _extra(DEFAULT_ALIAS_EXTRA, _MissingDefaultAlias)
    until = missing.get(name)
    now = time.monotonic()
    if until is None or now >= until:
        try:
            resolution = runtime.resolver.resolve(name, Reference(alias=DEFAULT_ALIAS))
        except NotFound:
            missing.remember(name, now + app_services().config.ALIAS_REFRESH_SECONDS)
        except DependencyUnavailable:
            if until is None:
                raise
            # Known to have no production alias a moment ago: serve latest's last known
            # mapping (the resolver marks it stale) rather than failing.
        else:
            if until is not None:
                missing.forget(name)
            return resolution
    return runtime.resolver.resolve(name, Reference(latest=True))


def _version_headers(resolution: Resolution) -> dict[str, str]:
    headers = {"X-Model-Version": str(resolution.spec.version)}
    if resolution.stale:
        headers["X-Model-Stale"] = "true"
        headers["Warning"] = '110 modelreg "registry unavailable; last known alias mapping"'
    return headers


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


@bp.errorhandler(ModelregError)
def _domain_error(error: ModelregError) -> Response:
    status = status_for(error)
    if status == 422:  # input validation: V2 clients expect 400
        status = 400
    return _error(status, error.detail)


@bp.errorhandler(RequestEntityTooLarge)  # the app registers this code: override it here
def _too_large(error: RequestEntityTooLarge) -> Response:
    return _error(413, "the request body exceeds the size limit")


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    return _error(error.code or 500, error.description or error.name)


@bp.errorhandler(ArtifactNotFound)
def _artifact_missing(error: ArtifactNotFound) -> Response:
    log.error("artifact missing from the store: %s", error)
    return _error(404, "the artifact is missing from the store")


@bp.errorhandler(StorageError)
def _storage_error(error: StorageError) -> Response:
    log.error("artifact store error: %s", error)
    return _error(503, "the artifact store is unavailable")


@bp.errorhandler(Exception)
def _unexpected(error: Exception) -> Response:
    log.exception("unhandled error on %s (request %s)", request.path, g.get("request_id"))
    return _error(500, "an unexpected error occurred; it has been logged with the request id")


# --------------------------------------------------------------------------- server


@v2_endpoint(
    summary="Server metadata",
    responses={200: json_answer("Server metadata.", V2_SERVER_METADATA)},
)
@bp.get("/v2")
@public
def server_metadata() -> Response:
    return _json({"name": SERVER_NAME, "version": server_version(), "extensions": EXTENSIONS})


@v2_endpoint(summary="Server liveness", responses={200: json_answer("Live.", V2_LIVE)})
@bp.get("/v2/health/live")
@public
def live() -> Response:
    return _json({"live": True})


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
    try:
        with app_services().uow() as work:
            work.session.execute(text("SELECT 1"))
    except DependencyUnavailable as error:
        return _json({"ready": False, "error": error.detail}, 503, {"Retry-After": "1"})
    return _json({"ready": True})


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
    runtime = _runtime()
    resolution = resolve(runtime, name, version)
    loaded = runtime.cache.get_or_load(resolution.spec.key)
    servable: Servable = loaded.extra
    plan = servable.plan
    body: dict[str, Any] = {
        "name": name,
        "versions": _ready_versions(name, resolution.spec.version),
        "platform": _platform(servable),
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": _input_datatype(loaded, servable),
                "shape": [-1, plan.n_features or -1],
            }
        ],
        "outputs": _output_metadata(loaded, servable),
    }
    parameters: dict[str, Any] = {"version": str(resolution.spec.version)}
    if plan.feature_names is not None:
        # One input per feature (each [N] or [N, 1]) is accepted too, named like these.
        parameters["feature_names"] = list(plan.feature_names)
    body["parameters"] = parameters
    return _json(body, headers=_version_headers(resolution))


def _ready_versions(name: str, resolved: int) -> list[str]:
    uow = app_services().uow
    numbers: list[int] = []
    page = Page(limit=500)
    try:
        while len(numbers) < _MAX_LISTED_VERSIONS:
            result = list_versions(uow, name, page, status="ready")
            numbers.extend(record.version for record in result.items)
            if not result.next_cursor:
                break
            page = Page(limit=500, after=decode_cursor(result.next_cursor, int))
    except DependencyUnavailable:
        numbers = [resolved]  # the registry is down: what this process knows
    return [str(n) for n in sorted(numbers)]


def _platform(servable: Servable) -> str:
    return "onnxruntime_onnx" if servable.format == "onnx" else f"sklearn_{servable.format}"


def _onnx_types(loaded: LoadedModel, outputs: bool) -> list[str]:
    session = getattr(loaded.model, "session", None)
    if session is None:
        return []
    items = session.get_outputs() if outputs else session.get_inputs()
    return [item.type for item in items]


def _input_datatype(loaded: LoadedModel, servable: Servable) -> str:
    if servable.format == "onnx":
        types = _onnx_types(loaded, outputs=False)
        if types and all(t == "tensor(float)" for t in types):
            return "FP32"
    return "FP64"


def _output_metadata(loaded: LoadedModel, servable: Servable) -> list[dict[str, Any]]:
    onnx = _onnx_types(loaded, outputs=True) if servable.format == "onnx" else []
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
    runtime = _runtime()
    resolution = resolve(runtime, name, version)  # unknown model/version: 404
    number = str(resolution.spec.version)
    try:
        runtime.cache.get_or_load(resolution.spec.key)
    except ModelregError as error:
        return _json(
            {"name": name, "version": number, "ready": False, "error": error.detail},
            503,
            {"Retry-After": "1", **_version_headers(resolution)},
        )
    return _json(
        {"name": name, "version": number, "ready": True}, 200, _version_headers(resolution)
    )


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
    clock = time.perf_counter_ns
    started = clock()
    runtime = _runtime()
    resolution = resolve(runtime, name, version)
    number = resolution.spec.version
    stats = inference_stats()
    try:
        servable: Servable = runtime.cache.get_or_load(resolution.spec.key).extra
        queued = clock()
        body = decode_content(
            request.get_data(cache=False),
            request.headers.get("Content-Encoding"),
            app_services().config.MAX_PREDICT_BODY_BYTES,
        )
        decoded = decode_request(
            body, request.headers.get(HEADER_LENGTH), servable.plan.tensor_budget
        )
        outputs = _requested_outputs(decoded, servable)
        X = to_matrix(decoded, servable.plan)
        decoded_at = clock()
        results = [call_model(servable, output.name, X, "inputs") for output in outputs]
        inferred = clock()
        entries: list[dict[str, Any]] = []
        binaries: list[bytes] = []
        for output, values in zip(outputs, results, strict=True):
            binary = decoded.binary_output if output.binary is None else output.binary
            entry, raw = encode_output(output.name, values, binary)
            entries.append(entry)
            if raw is not None:
                binaries.append(raw)
        header: dict[str, Any] = {"model_name": name, "model_version": str(number)}
        if decoded.id is not None:
            header["id"] = decoded.id
        header["outputs"] = entries
        payload, header_length = encode_response(header, binaries)
        encoded = clock()
    except BaseException:
        stats.record_failure(name, number, clock() - started)
        raise
    stats.record_success(
        name,
        number,
        rows=int(X.shape[0]),
        queue_ns=queued - started,
        input_ns=decoded_at - queued,
        infer_ns=inferred - decoded_at,
        output_ns=encoded - inferred,
        total_ns=encoded - started,
    )
    headers = _version_headers(resolution)
    if header_length is None:
        return Response(payload, mimetype="application/json", headers=headers)
    headers[HEADER_LENGTH] = str(header_length)
    return Response(payload, mimetype="application/octet-stream", headers=headers)


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


def _numeric(plan: InputPlan) -> bool:
    types = plan.column_types
    return types is None or _NUMERIC_COLUMN_TYPES.issuperset(types)


def _fail(message: str, field: str = "inputs") -> InvalidInput:
    return InvalidInput(message, {field: message})


def _check_finite(X: np.ndarray, tensors: Iterable[Tensor]) -> None:
    if any(t.datatype in FLOAT_DATATYPES for t in tensors) and not np.isfinite(X).all():
        raise _fail("inputs must be finite numbers (no NaN or infinity)")


def to_matrix(decoded: InferRequest, plan: InputPlan) -> Any:
    """Decoded tensors -> what the model's methods take (validated against its plan)."""
    if decoded.parameters.get("content_type") == "pd" or len(decoded.inputs) > 1:
        return _from_columns(decoded.inputs, plan)
    return _from_rows(decoded.inputs[0], plan)


def _from_rows(tensor: Tensor, plan: InputPlan) -> Any:
    array = tensor.array
    where = f"input {tensor.name[:64]!r}"
    width = plan.n_features
    if array.ndim == 1 and width in (None, 1):
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise _fail(
            f"{where}: expected shape [N, {width or 'F'}] (one row per instance), got "
            f"{list(tensor.shape)}; to send one tensor per feature, name each after a feature"
        )
    rows, columns = array.shape
    if rows == 0:
        raise _fail(f"{where}: no rows: send at least one row")
    if rows > plan.max_rows:
        raise _fail(f"{where}: too many rows: {rows}; the limit is {plan.max_rows} per request")
    if width is not None and columns != width:
        raise _fail(f"{where}: expected {width} features per row, got {columns}")
    if columns == 0:
        raise _fail(f"{where}: rows must have at least 1 value")
    if _numeric(plan) and tensor.datatype not in _NOT_NUMERIC:
        X = np.ascontiguousarray(array, dtype=np.float64)
        _check_finite(X, (tensor,))
        if not X.flags.writeable:  # FP64 binary data is a view of the request body
            X = X.copy()
        if not plan.needs_dataframe:
            return X
        array = X
    # Typed columns or a DataFrame: the shared validation builds it (and names bad values).
    if plan.feature_names is None:
        return rows_to_matrix(array.tolist(), plan, "inputs")
    return columns_to_matrix(
        {name: array[:, j].tolist() for j, name in enumerate(plan.feature_names)}, plan, "inputs"
    )


def _from_columns(tensors: list[Tensor], plan: InputPlan) -> Any:
    names = plan.feature_names
    if names is None:
        raise _fail(
            "this model's feature names are unknown, so inputs cannot be matched to features: "
            f"send one input named {INPUT_NAME!r} of shape [N, F]"
        )
    columns: dict[str, np.ndarray] = {}
    for tensor in tensors:
        array = tensor.array
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        elif array.ndim != 1:
            raise _fail(
                f"input {tensor.name[:64]!r}: a per-feature input must have shape [N] or "
                f"[N, 1], got {list(tensor.shape)}"
            )
        columns[tensor.name] = array
    missing = [x for x in names if x not in columns]
    unknown = [x[:64] for x in columns if x not in plan.feature_names]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing input(s) for feature(s) {missing}")
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        raise _fail(
            "; ".join(parts) + f"; expected one input per feature, named {list(names)}"
            f" (or one input {INPUT_NAME!r} of shape [N, {len(names)}])"
        )
    lengths = {len(array) for array in columns.values()}
    if len(lengths) > 1:
        raise _fail(f"per-feature inputs have different lengths: {sorted(lengths)}")
    rows = lengths.pop()
    if rows == 0:
        raise _fail("no rows: the inputs are empty")
    if rows > plan.max_rows:
        raise _fail(f"too many rows: {rows}; the limit is {plan.max_rows} per request")
    if (
        _numeric(plan)
        and not plan.needs_dataframe
        and not any(t.datatype in _NOT_NUMERIC for t in tensors)
    ):
        X = np.empty((rows, len(names)), dtype=np.float64)
        for j, name in enumerate(names):
            X[:, j] = columns[name]
        _check_finite(X, tensors)
        return X
    return columns_to_matrix({x: columns[x].tolist() for x in names}, plan, "inputs")


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
    cache_ = _runtime().cache
    allowed = _allowed()
    index: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in cache_.entries():
        if allowed(entry["name"]):
            index[(entry["name"], entry["version"])] = {
                "name": entry["name"],
                "version": str(entry["version"]),
                "state": "READY",
                "reason": "",
            }
    if not only_ready:
        for failure in cache_.failures():
            key = (failure["name"], failure["version"])
            if key not in index and allowed(failure["name"]):
                index[key] = {
                    "name": failure["name"],
                    "version": str(failure["version"]),
                    "state": "UNAVAILABLE",
                    "reason": f"{failure['error']}: {failure['detail']}",
                }
    return _json([index[key] for key in sorted(index)])


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
    runtime = _runtime()
    resolution = resolve(runtime, name, None)
    loaded = runtime.warm(name, str(resolution.spec.version))
    return _json(
        {
            "name": name,
            "version": str(loaded.key.version),
            "state": "READY",
            "load_seconds": loaded.load_seconds,
        },
        headers=_version_headers(resolution),
    )


@v2_endpoint(
    summary="Unload the model's default version",
    responses={200: json_answer("Unloaded.", V2_UNLOAD_RESPONSE, headers=VERSION_HEADERS)},
    errors=(401, 403, 404, 503),
)
@bp.post("/v2/repository/models/<name>/unload")
@requires("operator")
def repository_unload(name: str) -> Response:
    runtime = _runtime()
    resolution = resolve(runtime, name, None)
    evicted = runtime.evict(name, str(resolution.spec.version))
    return _json(
        {"name": name, "version": str(resolution.spec.version), "evicted": evicted},
        headers=_version_headers(resolution),
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
    allowed = _allowed()
    cached = [(e["name"], e["version"]) for e in _runtime().cache.entries() if allowed(e["name"])]
    stats = inference_stats().model_stats(lambda name, version: allowed(name), cached)
    return _json({"model_stats": stats})


@v2_endpoint(
    summary="Inference statistics of a model",
    responses={200: json_answer("Statistics.", V2_MODEL_STATS)},
    errors=(401, 403, 404, 503),
)
@bp.get("/v2/models/<name>/stats")
@requires("reader")
def model_stats(name: str) -> Response:
    runtime = _runtime()
    cached = [(e["name"], e["version"]) for e in runtime.cache.entries() if e["name"] == name]
    stats = inference_stats().model_stats(lambda model, version: model == name, cached)
    if not stats:  # nothing inferred or cached yet: the default version, if the model exists
        number = resolve(runtime, name, None).spec.version
        stats = inference_stats().model_stats(lambda model, version: False, [(name, number)])
    return _json({"model_stats": stats})


@v2_endpoint(
    summary="Inference statistics of a version",
    responses={200: json_answer("Statistics.", V2_MODEL_STATS)},
    errors=(401, 403, 404, 503),
)
@bp.get("/v2/models/<name>/versions/<version>/stats")
@requires("reader")
def model_version_stats(name: str, version: str) -> Response:
    number = resolve(_runtime(), name, version).spec.version
    stats = inference_stats().model_stats(
        lambda model, v: model == name and v == number, [(name, number)]
    )
    return _json({"model_stats": stats})
