"""MLflow's scoring protocol (`mlflow models serve`), so MLflow clients work against modelreg.

- `POST /models/<name>/<ref>/invocations`: any version or alias.
- `POST /invocations`: the model named by INVOCATIONS_MODEL (`name` or `name:ref`; without a
  ref, `production` when the model has it, else `latest`); a 404 when it is not set.
- `GET /ping`, `GET /health`: the process is up (public, like MLflow's).

Bodies: `application/json` with exactly one of `dataframe_split`, `dataframe_records`,
`instances`, `inputs` (validated like the native predict), or `text/csv` with a header row.
`params` must be an object and is ignored: scikit-learn's predict takes no parameters, and
MLflow itself ignores params a model's signature does not declare. Answers are MLflow's
`{"predictions": [...]}`; errors on these routes are MLflow's `{"error_code", "message"}`
(plus `errors`, each field and why), with input validation as 400 `INVALID_PARAMETER_VALUE`.
"""

from __future__ import annotations

import io
from typing import Any

import orjson
from flask import Blueprint, Response, g, request

from registry.access import public, requires
from registry.answers import Answer
from registry.endpoints import json_answer, request_body
from registry.errors import InvalidInput, MalformedRequest, NotFound, UnsupportedMediaType
from registry.http import app_services
from registry.problems import problem_for, to_response
from serving import native
from serving.api_docs import (
    INVOCATIONS_ERRORS,
    INVOCATIONS_REQUEST,
    INVOCATIONS_RESPONSE,
    PING_RESPONSE,
    mlflow_endpoint,
)
from serving.content_coding import decode_content
from serving.dataplane import Batch, DataPlane, Inference, UnitKey
from serving.inputs import InputPlan, decode_predict_document, parse_predict_json
from serving.loader import Servable, to_jsonable
from serving.unit_keys import from_environ

bp = Blueprint("invocations", __name__)

JSON = "application/json"
CSV = "text/csv"
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "RESOURCE_EXHAUSTED",
    415: "BAD_REQUEST",
    503: "TEMPORARILY_UNAVAILABLE",
}


@bp.errorhandler(Exception)
def _mlflow_error(error: Exception) -> Response:
    """The app's one error mapping, in MLflow's shape; input validation is MLflow's 400."""
    problem = problem_for(error, g.get("request_id"))
    invalid = problem.status == 422
    status = 400 if invalid else problem.status
    body: dict[str, Any] = {
        "error_code": "INVALID_PARAMETER_VALUE"
        if invalid
        else ERROR_CODES.get(status, "INTERNAL_ERROR"),
        "message": problem.detail,
    }
    if problem.errors:
        body["errors"] = problem.errors
    headers = [("Content-Type", JSON), *problem.headers]
    if status == 503:
        headers.append(("Retry-After", "1"))
    return to_response(Answer(status, headers, orjson.dumps(body)))


def media_type(mimetype: str) -> str:
    if mimetype in (JSON, ""):
        return JSON
    if mimetype == CSV:
        return CSV
    raise UnsupportedMediaType(
        f"this endpoint takes {JSON} or {CSV}, not {mimetype[:64]}",
        {"Content-Type": f"expected {JSON} or {CSV}"},
    )


def decode_csv(body: bytes, plan: InputPlan) -> Any:
    """A CSV body (a header row, then one row per instance) as a `dataframe_split`."""
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(body), nrows=plan.max_rows + 1)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        message = f"the body is not valid CSV (a header row, then one row per instance): {error}"
        raise MalformedRequest(message, {"body": "invalid CSV"}) from None
    split = {
        "columns": [str(c) for c in frame.columns],
        "data": frame.astype(object).values.tolist(),
    }
    return decode_predict_document({"dataframe_split": split}, plan)


def check_params(params: Any) -> None:
    if params is not None and type(params) is not dict:
        raise InvalidInput(
            "'params' must be an object (scikit-learn models take none: it is ignored)",
            {"params": "expected an object"},
        )


def decoder(body: bytes, media: str, content_encoding: str | None, limit: int):
    def decode(servable: Servable) -> Batch:
        raw = decode_content(body, content_encoding, limit) if content_encoding else body
        if media == CSV:
            decoded = decode_csv(raw, servable.plan)
        else:
            doc = parse_predict_json(raw, servable.plan)
            check_params(doc.pop("params", None))
            decoded = decode_predict_document(doc, servable.plan)
        return Batch(decoded.X, (decoded.method,), decoded.n_rows)

    decode.replay = ("invocations", body, media, content_encoding, limit)  # type: ignore[attr-defined]
    return decode


def encode(inference: Inference) -> bytes:
    return orjson.dumps(
        {"predictions": to_jsonable(inference.outputs[0])}, option=native.JSON_OPTIONS
    )


def invocations_answer(
    dataplane: DataPlane,
    name: str,
    ref: str | None,
    body: bytes,
    *,
    mimetype: str,
    content_encoding: str | None,
    max_body_bytes: int,
    unit: UnitKey | None = None,
) -> Answer:
    """An MLflow scoring request's 200 answer (failures raise their domain errors)."""
    decode = decoder(body, media_type(mimetype), content_encoding, max_body_bytes)
    served = dataplane.infer(name, ref, decode, encode, unit=unit)
    inference = served.inference
    headers = [("Content-Type", JSON), *native.model_headers(inference)]
    return Answer(200, headers, served.payload, str(inference.version))


def default_model(setting: str) -> tuple[str, str | None]:
    """INVOCATIONS_MODEL as (name, ref or None); NotFound when it is not set."""
    name, _, ref = setting.strip().partition(":")
    if not name:
        raise NotFound(
            "no default model: set INVOCATIONS_MODEL=name[:ref] on the server, or call "
            "/models/<name>/<ref>/invocations"
        )
    return name, ref or None


def _answer(name: str, ref: str | None) -> Response:
    body = request.get_data(cache=False)
    answer = invocations_answer(
        app_services().dataplane,
        name,
        ref,
        body,
        mimetype=request.mimetype,
        content_encoding=request.headers.get("Content-Encoding"),
        max_body_bytes=app_services().config.MAX_PREDICT_BODY_BYTES,
        unit=from_environ(request.environ, body),
    )
    return to_response(answer)


_OK = {200: json_answer("MLflow's predictions.", INVOCATIONS_RESPONSE)}
_BODY = request_body(INVOCATIONS_REQUEST)


@mlflow_endpoint(
    summary="MLflow scoring (a version or an alias)",
    body=_BODY,
    responses=_OK,
    errors=INVOCATIONS_ERRORS,
)
@bp.post("/models/<name>/<ref>/invocations")
@requires("reader")
def model_invocations(name: str, ref: str) -> Response:
    return _answer(name, ref)


@mlflow_endpoint(
    summary="MLflow scoring (the INVOCATIONS_MODEL)",
    body=_BODY,
    responses=_OK,
    errors=INVOCATIONS_ERRORS,
    description="The model named by the INVOCATIONS_MODEL setting (`name` or `name:ref`).",
)
@bp.post("/invocations")
@requires("reader")
def invocations() -> Response:
    return _answer(*default_model(app_services().config.INVOCATIONS_MODEL))


# MLflow answers "\n" labelled application/json, which is not JSON: the same newline, labelled
# for what it is (health checks look at the status only).
_PING = {200: json_answer("The process is up.", PING_RESPONSE, media="text/plain")}


@mlflow_endpoint(summary="MLflow liveness", responses=_PING)
@bp.get("/ping")
@public
def ping() -> Response:
    return Response("\n", 200, mimetype="text/plain")


@mlflow_endpoint(summary="MLflow liveness (alias of /ping)", responses=_PING)
@bp.get("/health")
@public
def health() -> Response:
    return Response("\n", 200, mimetype="text/plain")
