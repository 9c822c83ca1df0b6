"""Storage bytes -> verified against the registry record -> deserialized -> ready to predict."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from registry.errors import ArtifactIntegrityError, DependencyUnavailable, NotFound
from serving.cache import LoadedModel, VersionKey
from serving.formats import deserialize, estimate_nbytes, infer_signature
from serving.inputs import InputPlan, build_input_plan
from storage import ArtifactNotFound, ArtifactStore, StorageError

log = logging.getLogger(__name__)

SPOOL_IN_MEMORY = 64 * 1024 * 1024
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """What serving needs to know of a version; immutable for a given (name, version)."""

    name: str
    version: int
    sha256: str
    size: int
    artifact_key: str
    format: str
    status: str
    signature: dict[str, Any] | None
    input_example: list[Any] | None

    @property
    def key(self) -> VersionKey:
        return VersionKey(self.name, self.version, self.sha256)


@dataclass(frozen=True, slots=True)
class Servable:
    """Everything a predict call needs, built once at load time."""

    plan: InputPlan
    methods: dict[str, Callable[[Any], Any]]
    classes: list[Any] | None
    runtime: str
    format: str


class ModelLoader:
    """Loads a version for the cache. Every load verifies size and sha256 first."""

    def __init__(
        self,
        store: ArtifactStore,
        spec_for: Callable[[VersionKey], VersionSpec],
        *,
        allow_pickle: bool,
        max_rows: int,
        onnx_threads: int = 1,
    ) -> None:
        self.store = store
        self.spec_for = spec_for
        self.allow_pickle = allow_pickle
        self.max_rows = max_rows
        self.onnx_threads = onnx_threads

    def __call__(self, key: VersionKey) -> LoadedModel:
        spec = self.spec_for(key)
        started = time.perf_counter()
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as copy:
            self._copy_verified(spec, copy)
            copy.seek(0)
            model = deserialize(
                copy, spec.format, allow_pickle=self.allow_pickle, onnx_threads=self.onnx_threads
            )
        servable = self._servable(spec, model)
        seconds = time.perf_counter() - started
        log.info(
            "loaded %s v%d (%s, %d bytes) in %.3fs",
            spec.name,
            spec.version,
            spec.format,
            spec.size,
            seconds,
        )
        return LoadedModel(
            key=key,
            model=model,
            nbytes=estimate_nbytes(model, spec.size),
            load_seconds=seconds,
            extra=servable,
        )

    def _copy_verified(self, spec: VersionSpec, copy: Any) -> None:
        digest = hashlib.sha256()
        size = 0
        try:
            with self.store.open(spec.artifact_key) as source:
                while chunk := source.read(READ_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    copy.write(chunk)
        except ArtifactNotFound:
            log.error("artifact of %s v%d is missing from the store", spec.name, spec.version)
            raise NotFound(
                f"the artifact of version {spec.version} of '{spec.name}' is missing from the store"
            ) from None
        except StorageError as error:
            log.warning(
                "artifact store unavailable loading %s v%d: %s", spec.name, spec.version, error
            )
            raise DependencyUnavailable(
                "the artifact store is unavailable; cached models keep serving"
            ) from None
        if size != spec.size or digest.hexdigest() != spec.sha256:
            log.error(
                "INTEGRITY: %s v%d: stored bytes (%d bytes, sha256 %s) do not match the "
                "registry (%d bytes, sha256 %s); refusing to load",
                spec.name,
                spec.version,
                size,
                digest.hexdigest(),
                spec.size,
                spec.sha256,
            )
            raise ArtifactIntegrityError(
                f"version {spec.version} of '{spec.name}' failed its integrity check: the stored "
                "artifact does not match the sha256 recorded at registration; it will not be "
                "loaded",
                {"version": str(spec.version), "sha256": spec.sha256},
            )

    def _servable(self, spec: VersionSpec, model: Any) -> Servable:
        signature = dict(spec.signature or {})
        inferred = infer_signature(model)
        methods = {m: getattr(model, m) for m in inferred.get("methods", ["predict"])}
        needs_dataframe = getattr(model, "feature_names_in_", None) is not None
        plan = build_input_plan(
            signature or inferred,
            max_rows=self.max_rows,
            methods=methods.keys(),
            needs_dataframe=needs_dataframe,
        )
        classes = signature.get("classes", inferred.get("classes"))
        runtime = "onnxruntime" if spec.format == "onnx" else "sklearn"
        return Servable(
            plan=plan, methods=methods, classes=classes, runtime=runtime, format=spec.format
        )


def to_jsonable(values: Any) -> Any:
    """Predictions as something orjson serializes without copying numeric arrays."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "fiub":
            return np.ascontiguousarray(values)
        return values.tolist()
    return values
