"""MLflow model directories (`mlflow.sklearn.save_model`), uploaded as a zip or tar.gz.

Only the metadata is read here: the `MLmodel` file (YAML, safe loader, bounded), the input
example, and the name of the model file. The model file itself is copied out unread and
registered as what it is, `skops` or `joblib` (MLflow's pickle and cloudpickle files are
plain pickles), so it meets the same judgement as any other upload of that format
(serving/safeload: the skops type allowlist, or the restricted unpickler and ALLOW_PICKLE).
Nothing else in the directory (requirements, conda and virtualenv files) is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, BinaryIO

import orjson
import yaml

from registry.archives import Archive, ArchiveLimits, member_path, open_archive
from registry.errors import InvalidInput
from registry.signatures import MAX_EXAMPLE_ROWS

MLMODEL = "MLmodel"
MAX_MLMODEL_BYTES = 1024**2
# MLflow's serialization_format -> the format the inner file is registered as
SERIALIZATIONS = {"skops": "skops", "pickle": "joblib", "cloudpickle": "joblib"}
# MLflow column types -> ours (registry/signatures.py COLUMN_TYPES)
COLUMN_TYPES = {
    "double": "double",
    "float": "double",
    "long": "long",
    "integer": "long",
    "boolean": "boolean",
    "string": "string",
}


@dataclass(frozen=True, slots=True)
class MlflowModel:
    """What an MLflow sklearn model directory says about itself."""

    format: str
    model_file: str
    signature: dict[str, Any] | None = None
    input_example: list[Any] | None = None
    source: dict[str, str] = field(default_factory=dict)


MLFLOW_FORMAT = "mlflow"  # the upload's format; the version's is the inner file's
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")


def is_mlflow_upload(metadata: Mapping[str, Any], filename: str | None) -> bool:
    """`format: "mlflow"`, or no format and an archive's file name (a skops file is a zip
    too, so the name alone decides only when no format is given)."""
    if not isinstance(metadata, Mapping):
        return False  # the schema reports it
    if "format" in metadata:
        return metadata["format"] == MLFLOW_FORMAT
    return (filename or "").lower().endswith(ARCHIVE_SUFFIXES)


def unpack_mlflow_model(
    path: str,
    stored_size: int,
    limits: ArchiveLimits,
    target: BinaryIO,
    *,
    max_example_bytes: int,
) -> MlflowModel:
    """Check the archive at `path`, read its MLflow metadata, copy the model file to `target`."""
    with open_archive(path, stored_size, limits) as archive:
        model = read_mlflow_model(archive, max_example_bytes=max_example_bytes)
        archive.copy(model.model_file, target)
    return model


def read_mlflow_model(archive: Archive, *, max_example_bytes: int) -> MlflowModel:
    found = [name for name in archive.sizes if PurePosixPath(name).name == MLMODEL]
    if len(found) != 1:
        reason = "no MLmodel file" if not found else f"{len(found)} MLmodel files"
        raise InvalidInput(
            f"an MLflow model archive needs exactly one MLmodel file; it has {reason}",
            {"artifact": reason},
        )
    root = PurePosixPath(found[0]).parent
    document = _yaml(archive.read(found[0], MAX_MLMODEL_BYTES))
    flavors = document.get("flavors")
    if not isinstance(flavors, Mapping) or not flavors:
        raise _invalid("the MLmodel file names no flavors", "MLmodel has no flavors")
    sklearn = flavors.get("sklearn")
    if not isinstance(sklearn, Mapping):
        names = ", ".join(sorted(str(f) for f in flavors))
        only_pyfunc = set(flavors) == {"python_function"}
        raise InvalidInput(
            ("pyfunc-only models are not supported" if only_pyfunc else "unsupported flavor")
            + f": the MLflow model has flavors {names}; save it with mlflow.sklearn",
            {"artifact.flavors": f"the sklearn flavor is required (found {names})"},
        )
    serialization = str(sklearn.get("serialization_format", "cloudpickle"))
    fmt = SERIALIZATIONS.get(serialization)
    if fmt is None:
        raise _invalid(
            f"serialization_format {serialization!r} is not supported",
            f"serialization_format must be one of {', '.join(SERIALIZATIONS)}",
            key="artifact.serialization_format",
        )
    model_file = _inside(root, sklearn.get("pickled_model"), "pickled_model")
    if model_file not in archive.sizes:
        raise _invalid(f"the model file {model_file!r} is missing", "pickled_model not found")
    return MlflowModel(
        format=fmt,
        model_file=model_file,
        signature=_signature(document.get("signature")),
        input_example=_example(archive, root, document, max_example_bytes),
        source=_source(document, serialization),
    )


def with_mlflow_metadata(meta: Mapping[str, Any], model: MlflowModel) -> dict[str, Any]:
    """The upload's metadata completed from the MLflow model; what the publisher sent wins."""
    merged = dict(meta)
    merged["format"] = model.format
    if merged.get("signature") is None and model.signature:
        merged["signature"] = model.signature
    if merged.get("input_example") is None and model.input_example:
        merged["input_example"] = model.input_example
    merged["source"] = {**model.source, **{k: v for k, v in merged.get("source", {}).items()}}
    return merged


# --------------------------------------------------------------------------- the parts


def _invalid(detail: str, reason: str, key: str = "artifact") -> InvalidInput:
    return InvalidInput(f"the MLflow model was refused: {detail}", {key: reason})


def _yaml(data: bytes) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(data)  # plain data only: no tags that build objects
    except yaml.YAMLError as error:
        raise _invalid("the MLmodel file is not valid YAML", str(error)[:200]) from None
    if not isinstance(document, Mapping):
        raise _invalid("the MLmodel file is not a mapping", "MLmodel is not a YAML mapping")
    return document


def _inside(root: PurePosixPath, name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise _invalid(f"the MLmodel file has no {what}", f"{what} is missing")
    try:
        relative = member_path(name)
    except InvalidInput:
        relative = None
    if relative is None:
        raise _invalid(f"{what} {name[:100]!r} is outside the model directory", f"bad {what}")
    return str(root / relative) if str(root) != "." else relative


def _signature(block: Any) -> dict[str, Any] | None:
    if not isinstance(block, Mapping) or not block.get("inputs"):
        return None
    try:
        specs = orjson.loads(block["inputs"])
    except (orjson.JSONDecodeError, TypeError):
        raise _invalid("signature inputs are not JSON", "unreadable", "signature.inputs") from None
    if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
        return None
    if specs[0].get("type") == "tensor":
        shape = (specs[0].get("tensor-spec") or {}).get("shape")
        if len(specs) == 1 and isinstance(shape, list) and len(shape) == 2:
            width = shape[1]
            if isinstance(width, int) and width > 0:
                return {"n_features": width}
        return None  # other tensor layouts say nothing our signature can hold
    columns = []
    for spec in specs:
        kind = COLUMN_TYPES.get(str(spec.get("type")))
        if kind is None:
            name = spec.get("name", len(columns))
            raise _invalid(
                f"column {name!r} has MLflow type {spec.get('type')!r}",
                f"column {name!r}: type {spec.get('type')!r} is not one of "
                f"{', '.join(COLUMN_TYPES)}",
                "signature.inputs",
            )
        columns.append({"name": spec.get("name"), "type": kind})
    signature: dict[str, Any] = {"n_features": len(columns)}
    if all(isinstance(col["name"], str) and col["name"] for col in columns):
        signature["feature_names"] = [col["name"] for col in columns]
    if any(col["type"] not in ("double", "long") for col in columns):
        signature["inputs"] = columns  # numeric-only models keep the plain float64 path
    return signature


def _example(
    archive: Archive, root: PurePosixPath, document: Mapping[str, Any], max_bytes: int
) -> list[Any] | None:
    info = document.get("saved_input_example_info")
    if not isinstance(info, Mapping):
        return None
    name = _inside(root, info.get("artifact_path", "input_example.json"), "input example")
    if name not in archive.sizes:
        return None
    try:
        example = orjson.loads(archive.read(name, max_bytes))
    except orjson.JSONDecodeError:
        raise _invalid("the input example is not JSON", "unreadable", "input_example") from None
    rows: Any = None
    if isinstance(example, dict) and isinstance(example.get("data"), list):  # split orient
        columns = example.get("columns")
        rows = example["data"]
        if isinstance(columns, list) and all(isinstance(c, str) for c in columns):
            width = len(columns)
            rows = [
                dict(zip(columns, row, strict=True))
                for row in rows
                if isinstance(row, list) and len(row) == width
            ]
    elif isinstance(example, dict) and isinstance(example.get("inputs"), list):  # ndarray
        rows = example["inputs"]
    elif isinstance(example, list):
        rows = example
    if not rows:
        return None
    return rows[:MAX_EXAMPLE_ROWS]


def _source(document: Mapping[str, Any], serialization: str) -> dict[str, str]:
    run = document.get("run_id")
    uuid = document.get("model_uuid")
    origin = f"mlflow:run/{run}" if run else (f"mlflow:model/{uuid}" if uuid else "mlflow")
    version = document.get("mlflow_version", "unknown")
    return {"run": origin[:1000], "code": f"mlflow.sklearn {serialization} (mlflow {version})"}
