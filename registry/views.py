"""The registry's HTTP API. Views parse, call one service, and dump; they never commit.

Nor do they tell the serving cache what changed: the services announce it on their unit of
work, which delivers it after the commit (registry/changes.py).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request, send_file
from werkzeug.exceptions import RequestedRangeNotSatisfiable as RangeNotSatisfiable
from werkzeug.formparser import FormDataParser
from werkzeug.wsgi import wrap_file

from registry import schemas
from registry.access import current_identity, require_model, require_role, requires
from registry.api_docs import (
    ARTIFACT_HEADERS,
    CREATE_MODEL_EXAMPLES,
    IF_NONE_MATCH,
    LOCATION,
    MODEL_EXAMPLE,
    PROMOTE_EXAMPLES,
    REASON_BODY,
    REASON_QUERY,
    REGISTER_BODY,
    VERSION_EXAMPLE,
    alias_move_example,
    page_of,
)
from registry.archives import ArchiveLimits
from registry.endpoints import BODY_ERRORS, binary, endpoint, json_answer, no_body, request_body
from registry.errors import (
    InvalidInput,
    MalformedRequest,
    NotFound,
    TooLarge,
    UnsupportedMediaType,
)
from registry.http import app_services, current_actor, json_body, json_response
from registry.mlflow_models import is_mlflow_upload, unpack_mlflow_model, with_mlflow_metadata
from registry.monitoring.registration import profile_at_registration, registration_reference
from registry.names import Reference, is_model_name, parse_reference, validate_model_name
from registry.pagination import make_page
from registry.services import aliases as alias_service
from registry.services import events as event_service
from registry.services import models as model_service
from registry.services import versions as version_service
from storage import StagedUpload

bp = Blueprint("registry", __name__)

_model_out = schemas.ModelOut()
_version_out = schemas.VersionOut()
_alias_out = schemas.AliasOut()
_move_out = schemas.AliasMoveOut()
_event_out = schemas.EventOut()
_list_query = schemas.ListQuerySchema()

EXTENSION_FORMATS = {
    ".joblib": "joblib",
    ".pkl": "joblib",
    ".skops": "skops",
    ".onnx": "onnx",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
}
FILE_EXTENSIONS = {
    "joblib": "joblib",
    "skops": "skops",
    "onnx": "onnx",
    "xgboost": "json",
    "lightgbm": "txt",
}
PARSER_MEMORY_FLOOR = 256 * 1024  # > werkzeug's 64 KiB multipart read size plus its carry-over


def _model_name(name: str) -> str:
    if not is_model_name(name):
        raise NotFound(f"no model named {name!r}: not a valid model name")
    return name


def _reference(ref: str) -> Reference:
    parsed = parse_reference(ref)
    if parsed is None:
        raise NotFound(f"{ref!r} is not a version number, an alias or 'latest'")
    return parsed


def _list_args(key_type: type) -> tuple[Any, dict[str, Any]]:
    args = schemas.load(
        _list_query,
        {k: request.args.getlist(k) if k == "tag" else v for k, v in request.args.items()},
    )
    config = app_services().config
    page = make_page(
        args.get("limit"),
        args.get("cursor"),
        default=config.DEFAULT_PAGE_SIZE,
        maximum=config.MAX_PAGE_SIZE,
        key_type=key_type,
    )
    tags = []
    for raw in args.get("tag", []):
        key, sep, value = raw.partition(":")
        tags.append((key, value if sep else None))
    args["tag"] = tags
    return page, args


def _reason() -> str:
    body = json_body(required=False)
    if not body and "reason" in request.args:
        body = {"reason": request.args["reason"]}
    return schemas.load(schemas.ReasonSchema(), body)["reason"]


# ---- models ------------------------------------------------------------------------------


@endpoint(
    summary="Create a registered model",
    tag="registry",
    body=request_body(schemas.ModelCreateSchema, examples=CREATE_MODEL_EXAMPLES),
    responses={
        201: json_answer(
            "The new model.",
            schemas.ModelOut,
            example=MODEL_EXAMPLE | {"aliases": {}, "latest_version": None},
            headers=LOCATION,
        )
    },
    errors=(*BODY_ERRORS, 409),
    description="409 when a model of that name exists; 403 when the token is restricted to "
    "other models.",
)
@bp.post("/models")
@requires("publisher")
def create_model() -> Response:
    data = schemas.load(schemas.ModelCreateSchema(), json_body())
    require_model(data["name"])  # the name is in the body, out of the path check's sight
    record = model_service.create_model(
        app_services().uow,
        data["name"],
        description=data["description"],
        tags=data["tags"],
        actor=current_actor(),
    )
    return json_response(_model_out.dump(record), 201, {"Location": f"/models/{record.name}"})


@endpoint(
    summary="List registered models",
    tag="registry",
    query=schemas.ListQuerySchema(only=("limit", "cursor", "q", "tag")),
    responses={
        200: json_answer(
            "A page of models.",
            page_of("ModelList", "models", schemas.ModelOut),
            example={"models": [MODEL_EXAMPLE], "next_cursor": None},
        )
    },
    errors=(401, 403, 422, 503),
)
@bp.get("/models")
def list_models() -> Response:
    page, args = _list_args(str)
    result = model_service.list_models(
        app_services().uow,
        page,
        search=args.get("q"),
        tags=args["tag"],
        only=current_identity().models,
    )
    return json_response(
        {"models": _model_out.dump(result.items, many=True), "next_cursor": result.next_cursor}
    )


@endpoint(
    summary="Get a registered model",
    tag="registry",
    responses={
        200: json_answer("The model, with its aliases.", schemas.ModelOut, example=MODEL_EXAMPLE)
    },
    errors=(401, 403, 404, 503),
)
@bp.get("/models/<name>")
def get_model(name: str) -> Response:
    return json_response(
        _model_out.dump(model_service.get_model(app_services().uow, _model_name(name)))
    )


@endpoint(
    summary="Update a model's description or tags",
    tag="registry",
    body=request_body(
        schemas.ModelUpdateSchema,
        examples={
            "retag": {
                "value": {"tags": {"team": "pricing", "obsolete": None}, "reason": "team tag"}
            }
        },
    ),
    responses={200: json_answer("The updated model.", schemas.ModelOut)},
    errors=(*BODY_ERRORS, 404),
    description="`tags` is a merge patch: a null value removes that tag.",
)
@bp.patch("/models/<name>")
@requires("publisher")
def update_model(name: str) -> Response:
    data = schemas.load(schemas.ModelUpdateSchema(), json_body())
    record = model_service.update_model(
        app_services().uow,
        _model_name(name),
        description=data.get("description"),
        tags=data.get("tags"),
        reason=data["reason"],
        actor=current_actor(),
    )
    return json_response(_model_out.dump(record))


@endpoint(
    summary="Delete a registered model",
    tag="registry",
    body=REASON_BODY,
    parameters=(REASON_QUERY,),
    responses={204: no_body("Deleted.")},
    errors=(*BODY_ERRORS, 404, 409),
    description="409 while an alias points at one of its versions.",
)
@bp.delete("/models/<name>")
@requires("operator")
def delete_model(name: str) -> Response:
    model_service.delete_model(
        app_services().uow, _model_name(name), reason=_reason(), actor=current_actor()
    )
    return Response(status=204)


# ---- versions ----------------------------------------------------------------------------


def _read_metadata(form: Any, files: Any, limit: int) -> dict[str, Any]:
    if "metadata" in files:
        part = files["metadata"]
        raw = part.stream.read(limit + 1)
        if len(raw) > limit:
            raise TooLarge(
                "the metadata part is too large",
                {"metadata": f"over {limit} bytes (server setting MAX_METADATA_BYTES)"},
            )
    else:
        raw = form.get("metadata", "")
        if len(raw.encode()) > limit:
            raise TooLarge(
                "the metadata part is too large",
                {"metadata": f"over {limit} bytes (server setting MAX_METADATA_BYTES)"},
            )
    if not raw or not raw.strip():
        return {}
    return schemas.parse_json(raw, field="metadata")


@endpoint(
    summary="Register a new version (multipart upload)",
    tag="registry",
    body=REGISTER_BODY,
    responses={
        201: json_answer(
            "The new version record.",
            schemas.VersionOut,
            example=VERSION_EXAMPLE,
            headers=LOCATION,
        )
    },
    errors=(*BODY_ERRORS, 409),
    description="Creates the registered model if it does not exist. The server assigns the "
    "next version number (never reused), computes sha256 and size, and infers the signature "
    "where it can. Pickle-based formats need the publisher role and may be disabled on this "
    "server (422).",
)
@bp.post("/models/<name>/versions")
@requires("publisher")
def register_version(name: str) -> Response:
    validate_model_name(name)
    deps = app_services()
    config = deps.config
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType(
            "register a version with multipart/form-data: parts 'artifact' and 'metadata'",
            {"Content-Type": "expected multipart/form-data"},
        )
    limit = config.MAX_ARTIFACT_BYTES + config.MAX_METADATA_BYTES + 64 * 1024
    request.max_content_length = limit
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(
            f"the upload exceeds {config.MAX_ARTIFACT_BYTES} bytes (MAX_ARTIFACT_BYTES)",
            {"artifact": f"limit is {config.MAX_ARTIFACT_BYTES} bytes (MAX_ARTIFACT_BYTES)"},
        )
    staged: list[StagedUpload] = []

    def stream_factory(**_: Any) -> StagedUpload:
        upload = deps.store.stage(max_bytes=config.MAX_ARTIFACT_BYTES)
        staged.append(upload)
        return upload

    try:
        parser = FormDataParser(
            stream_factory=stream_factory,
            # werkzeug holds every chunk it reads (file data included) to this bound, so it
            # cannot be smaller than its read size; _read_metadata applies the metadata limit.
            max_form_memory_size=max(config.MAX_METADATA_BYTES, PARSER_MEMORY_FLOOR),
            max_form_parts=16,
            silent=False,
        )
        try:
            _, form, files = parser.parse(
                request.stream, request.mimetype, request.content_length, request.mimetype_params
            )
        except ValueError as error:  # no boundary, truncated or garbled parts: bad input
            raise MalformedRequest(
                "the multipart body cannot be parsed", {"body": str(error)[:200]}
            ) from None
        artifacts = files.getlist("artifact")
        if len(artifacts) != 1:
            raise InvalidInput(
                "exactly one 'artifact' file part is required",
                {"artifact": "missing" if not artifacts else "given twice"},
            )
        metadata = _read_metadata(form, files, config.MAX_METADATA_BYTES)
        reference = registration_reference(
            files, metadata, config.MONITOR_MAX_REFERENCE_BYTES, form
        )
        artifact: StagedUpload = artifacts[0].stream
        if is_mlflow_upload(metadata, artifacts[0].filename):
            artifact, metadata = _unpack_mlflow(artifact, metadata, stream_factory(), config)
        meta = schemas.load(schemas.VersionMetadataSchema(), metadata, prefix="metadata")
        if "format" not in meta:
            filename = (artifacts[0].filename or "").lower()
            guessed = next(
                (f for ext, f in EXTENSION_FORMATS.items() if filename.endswith(ext)), None
            )
            if guessed is None:
                raise InvalidInput(
                    "the artifact format is required",
                    {"metadata.format": "one of joblib, skops, onnx, xgboost, lightgbm"},
                )
            meta["format"] = guessed
        record = version_service.register_version(
            deps.uow,
            deps.store,
            deps.inspect_artifact,
            name=name,
            staged=artifact,
            meta=version_service.NewVersion(**meta),
            actor=current_actor(),
            accelerate=config.ACCELERATE != "off",
        )
        body = _version_out.dump(record)
        if reference is not None:
            body["reference"] = profile_at_registration(
                deps.uow, name, record.version, reference, current_actor()
            )
    finally:
        for upload in staged:
            upload.discard()
    return json_response(body, 201, {"Location": f"/models/{name}/versions/{record.version}"})


def _unpack_mlflow(
    archive: StagedUpload, metadata: dict[str, Any], inner: StagedUpload, config: Any
) -> tuple[StagedUpload, dict[str, Any]]:
    """An MLflow model archive -> its model file (staged unread, judged at registration like
    any upload of its format) and the metadata completed from its MLmodel."""
    archive.flush()
    model = unpack_mlflow_model(
        archive.path,
        archive.size,
        ArchiveLimits(config.MAX_ARTIFACT_MEMBERS, config.MAX_UNPACKED_ARTIFACT_BYTES),
        inner,
        max_example_bytes=config.MAX_METADATA_BYTES,
    )
    return inner, with_mlflow_metadata(metadata, model)


@endpoint(
    summary="List a model's versions",
    tag="registry",
    query=schemas.ListQuerySchema(only=("limit", "cursor", "status", "tag")),
    responses={
        200: json_answer(
            "A page of versions, newest first.",
            page_of("VersionList", "versions", schemas.VersionOut),
        )
    },
    errors=(401, 403, 404, 422, 503),
)
@bp.get("/models/<name>/versions")
def list_versions(name: str) -> Response:
    page, args = _list_args(int)
    result = version_service.list_versions(
        app_services().uow, _model_name(name), page, status=args.get("status"), tags=args["tag"]
    )
    return json_response(
        {"versions": _version_out.dump(result.items, many=True), "next_cursor": result.next_cursor}
    )


@endpoint(
    summary="Get a version",
    tag="registry",
    responses={
        200: json_answer("The version record.", schemas.VersionOut, example=VERSION_EXAMPLE)
    },
    errors=(401, 403, 404, 503),
)
@bp.get("/models/<name>/versions/<ref>")
def get_version(name: str, ref: str) -> Response:
    record = version_service.get_version(app_services().uow, _model_name(name), _reference(ref))
    return json_response(_version_out.dump(record))


@endpoint(
    summary="Update a version's description, tags, input example or status",
    tag="registry",
    body=request_body(
        schemas.VersionUpdateSchema,
        examples={"archive": {"value": {"status": "archived", "reason": "superseded by v8"}}},
    ),
    responses={200: json_answer("The updated version record.", schemas.VersionOut)},
    errors=(*BODY_ERRORS, 404, 409),
    description="Changing `status` (archive or restore) needs the operator role; 409 when "
    "archiving a version an alias points at. `input_example` replaces the example, checked "
    "against the signature exactly as at registration (422 otherwise).",
)
@bp.patch("/models/<name>/versions/<ref>")
@requires("publisher")
def update_version(name: str, ref: str) -> Response:
    data = schemas.load(schemas.VersionUpdateSchema(), json_body())
    if "status" in data:
        require_role("operator")  # archiving and restoring are operator decisions
    record = version_service.update_version(
        app_services().uow,
        _model_name(name),
        _reference(ref),
        description=data.get("description"),
        tags=data.get("tags"),
        status=data.get("status"),
        input_example=data.get("input_example"),
        reason=data["reason"],
        actor=current_actor(),
    )
    return json_response(_version_out.dump(record))


@endpoint(
    summary="Delete a version",
    tag="registry",
    body=REASON_BODY,
    parameters=(REASON_QUERY,),
    responses={204: no_body("Deleted; its number is never reused.")},
    errors=(*BODY_ERRORS, 404, 409),
    description="409 while an alias points at it.",
)
@bp.delete("/models/<name>/versions/<ref>")
@requires("operator")
def delete_version(name: str, ref: str) -> Response:
    version_service.delete_version(
        app_services().uow,
        _model_name(name),
        _reference(ref),
        reason=_reason(),
        actor=current_actor(),
    )
    return Response(status=204)


@endpoint(
    summary="Download a version's artifact",
    tag="registry",
    parameters=(IF_NONE_MATCH,),
    responses={
        200: json_answer(
            "The artifact's bytes.",
            binary(),
            headers=ARTIFACT_HEADERS,
            media="application/octet-stream",
        ),
        304: no_body("Not modified: If-None-Match matched the artifact's sha256."),
    },
    errors=(401, 403, 404, 503),
)
@bp.get("/models/<name>/versions/<ref>/artifact")
def download_artifact(name: str, ref: str) -> Response:
    deps = app_services()
    record, stream, span = version_service.open_artifact(
        deps.uow, deps.store, _model_name(name), _reference(ref), byte_range=_requested_range
    )
    filename = f"{record.name}-v{record.version}.{FILE_EXTENSIONS[record.format]}"
    if span is not None:  # a resumed or partial download: 206 with just those bytes
        start, stop = span
        response = Response(
            wrap_file(request.environ, stream),
            status=206,
            mimetype="application/octet-stream",
            direct_passthrough=True,
        )
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{record.size}"
        response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        response.content_length = stop - start
        response.set_etag(record.sha256)
    else:
        response = send_file(
            stream,
            mimetype="application/octet-stream",
            as_attachment=True,
            download_name=filename,
            etag=record.sha256,
            conditional=True,
        )
        # send_file says no-cache (store, but revalidate); artifacts are not to be stored.
        response.headers["Cache-Control"] = "no-store"
        if response.status_code == 200:
            response.content_length = record.size
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["X-Model-Version"] = str(record.version)
    response.headers["X-Content-SHA256"] = record.sha256
    return response


def _requested_range(size: int) -> tuple[int, int] | None:
    """(start, stop) of a single satisfiable `Range: bytes=...`, honouring If-Range."""
    requested = request.range
    if requested is None or len(requested.ranges) != 1:
        return None
    if_range = request.if_range
    if if_range.etag is not None or if_range.date is not None:
        return None  # conservative: a conditional range gets the whole artifact
    span = requested.range_for_length(size)
    if span is None:
        raise RangeNotSatisfiable(length=size)
    return span


# ---- aliases -----------------------------------------------------------------------------


@endpoint(
    summary="Promote a version to an alias",
    tag="registry",
    body=request_body(schemas.PromoteSchema, required=False, examples=PROMOTE_EXAMPLES),
    responses={
        200: json_answer("The alias moved.", schemas.AliasMoveOut, example=alias_move_example(7, 6))
    },
    errors=(*BODY_ERRORS, 404, 409),
    description="Before the alias moves, the version is loaded, its sha256 verified and its "
    "input example predicted; a failure is 422 and the alias does not move. A version "
    "without an input example is refused (422) for the aliases the server names in "
    "`REQUIRE_INPUT_EXAMPLE_FOR` (default `production`): add one with a PATCH of the version. "
    "The promote event records what was checked. With "
    "`expected_version`, 409 when the alias points elsewhere. An empty body promotes to "
    "`production`.",
)
@bp.post("/models/<name>/versions/<ref>/promote")
@requires("operator")
def promote(name: str, ref: str) -> Response:
    deps = app_services()
    data = schemas.load(schemas.PromoteSchema(), json_body(required=False))
    reference = _reference(ref)
    number = reference.version
    if number is None:  # promoting "latest" or another alias's target: pin it first
        number = version_service.get_version(deps.uow, _model_name(name), reference).version
    options: dict[str, Any] = {}
    if "expected_version" in data:
        options["expected_version"] = data["expected_version"]
    move = alias_service.promote_version(
        deps.uow,
        _model_name(name),
        number,
        alias=data["alias"],
        reason=data["reason"],
        actor=current_actor(),
        check=deps.check_version,
        example_required_for=alias_service.example_required_for(
            deps.config.REQUIRE_INPUT_EXAMPLE_FOR
        ),
        **options,
    )
    return json_response(_move_out.dump(move))


@endpoint(
    summary="Roll an alias back to its previous version",
    tag="registry",
    body=REASON_BODY,
    parameters=(REASON_QUERY,),
    responses={
        200: json_answer(
            "The alias moved back.", schemas.AliasMoveOut, example=alias_move_example(6, 7)
        )
    },
    errors=(*BODY_ERRORS, 404, 409),
    description="Undoes the most recent promotion of the alias that has not been rolled back "
    "yet; 409 when there is nothing left to roll back to.",
)
@bp.post("/models/<name>/aliases/<alias>/rollback")
@requires("operator")
def rollback(name: str, alias: str) -> Response:
    deps = app_services()
    move = alias_service.rollback_alias(
        deps.uow,
        _model_name(name),
        alias,
        reason=_reason(),
        actor=current_actor(),
        check=deps.check_version,
    )
    return json_response(_move_out.dump(move))


@endpoint(
    summary="List a model's aliases",
    tag="registry",
    query=schemas.ListQuerySchema(only=("limit", "cursor")),
    responses={200: json_answer("The aliases.", page_of("AliasList", "aliases", schemas.AliasOut))},
    errors=(401, 403, 404, 422, 503),
)
@bp.get("/models/<name>/aliases")
def list_aliases(name: str) -> Response:
    page, _ = _list_args(str)
    result = alias_service.list_aliases(app_services().uow, _model_name(name), page)
    return json_response(
        {"aliases": _alias_out.dump(result.items, many=True), "next_cursor": result.next_cursor}
    )


@endpoint(
    summary="Delete an alias",
    tag="registry",
    body=REASON_BODY,
    parameters=(REASON_QUERY,),
    responses={204: no_body("Deleted.")},
    errors=(*BODY_ERRORS, 404),
)
@bp.delete("/models/<name>/aliases/<alias>")
@requires("operator")
def delete_alias(name: str, alias: str) -> Response:
    deps = app_services()
    alias_service.delete_alias(
        deps.uow, _model_name(name), alias, reason=_reason(), actor=current_actor()
    )
    return Response(status=204)


# ---- events ------------------------------------------------------------------------------


@endpoint(
    summary="The model's audit trail",
    tag="registry",
    query=schemas.ListQuerySchema(only=("limit", "cursor", "type")),
    responses={
        200: json_answer(
            "A page of events, newest first.", page_of("EventList", "events", schemas.EventOut)
        )
    },
    errors=(401, 403, 404, 422, 503),
)
@bp.get("/models/<name>/events")
def list_events(name: str) -> Response:
    page, args = _list_args(int)
    result = event_service.list_events(
        app_services().uow, _model_name(name), page, type_=args.get("type")
    )
    return json_response(
        {"events": _event_out.dump(result.items, many=True), "next_cursor": result.next_cursor}
    )
