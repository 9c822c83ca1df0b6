"""Storage bytes -> verified against the registry record -> deserialized -> ready to predict."""

from __future__ import annotations

import functools
import gc
import hashlib
import io
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from registry.errors import (
    ArtifactIntegrityError,
    DependencyUnavailable,
    ModelregError,
)
from serving.batching import MicroBatcher, batching_helps
from serving.boosters import BOOSTER_FORMATS, BoosterModel, LibraryMissing
from serving.boosters.routing import LIBRARY_FROM_ROWS, by_rows
from serving.cache import LoadedModel, VersionKey
from serving.formats import TrustPolicy, deserialize, estimate_nbytes, infer_signature
from serving.inputs import InputPlan, build_input_plan, rows_to_matrix
from serving.linear import NativeLinear
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
    # The verified conversion, when registration made one, and the runtime that loads it:
    # "numpy" (a linear model's arrays, serving.linear) or "onnxruntime" (an ONNX file).
    accel_key: str | None = None
    accel_sha256: str | None = None
    accel_size: int | None = None
    accel_runtime: str | None = None
    # Built once: every cached predict looks its model up by it.
    key: VersionKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", VersionKey(self.name, self.version, self.sha256))


@dataclass(frozen=True, slots=True)
class Servable:
    """Everything a predict call needs, built once at load time."""

    plan: InputPlan
    methods: dict[str, Callable[[Any], Any]]
    classes: list[Any] | None
    runtime: str
    format: str
    # ONNX tensor types ("tensor(float)"...) of the session's inputs and outputs, for
    # protocols that describe them (V2 metadata); empty for other runtimes.
    input_types: tuple[str, ...] = ()
    output_types: tuple[str, ...] = ()


class ModelLoader:
    """Loads a version for the cache. Every load verifies size and sha256 first."""

    def __init__(
        self,
        store: ArtifactStore,
        spec_for: Callable[[VersionKey], VersionSpec],
        *,
        trust: TrustPolicy,
        max_rows: int,
        onnx_threads: int = 1,
        accelerate: bool = True,
        batching: BatchingPolicy | None = None,
    ) -> None:
        self.store = store
        self.spec_for = spec_for
        self.trust = trust
        self.max_rows = max_rows
        self.onnx_threads = onnx_threads
        self.accelerate = accelerate
        self.batching = batching
        # Set by the production server: what a load imports and builds lives as long as the
        # process, so it is moved out of the collector's sight (see docs/performance.md).
        self.freeze_gc_after_load = False

    def __call__(self, key: VersionKey) -> LoadedModel:
        spec = self.spec_for(key)
        started = time.perf_counter()
        loaded = self._load_accelerated(spec) if self.accelerate and spec.accel_key else None
        if loaded is None:
            model = self._deserialize(spec, spec.artifact_key, spec.sha256, spec.size, spec.format)
            loaded = model, self._servable(spec, model), estimate_nbytes(model, spec.size)
        model, servable, nbytes = loaded
        if self.freeze_gc_after_load:
            gc.collect()
            gc.freeze()
        seconds = time.perf_counter() - started
        log.info(
            "loaded %s v%d (%s via %s, %d bytes) in %.3fs",
            spec.name,
            spec.version,
            spec.format,
            servable.runtime,
            spec.size,
            seconds,
        )
        return LoadedModel(
            key=key, model=model, nbytes=nbytes, load_seconds=seconds, extra=servable
        )

    def _deserialize(self, spec: VersionSpec, key: str, sha256: str, size: int, fmt: str) -> Any:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as copy:
            self._copy_verified(spec, key, sha256, size, copy)
            copy.seek(0)
            try:
                return deserialize(copy, fmt, trust=self.trust, onnx_threads=self.onnx_threads)
            except LibraryMissing as missing:
                # Registered where the library was installed; this server lacks it.
                log.error("%s v%d: %s", spec.name, spec.version, missing.detail)
                raise DependencyUnavailable(
                    f"version {spec.version} of '{spec.name}' is a {fmt} model and this server "
                    f"cannot load it: install the extra: pip install 'modelreg[{missing.extra}]'",
                    {"format": f"{fmt} needs the '{missing.extra}' extra on the server"},
                ) from None

    def _load_accelerated(self, spec: VersionSpec) -> tuple[Any, Servable, int] | None:
        """The verified conversion (numpy arrays or ONNX); any failure to load it falls back
        to the original artifact."""
        assert spec.accel_key and spec.accel_sha256 and spec.accel_size is not None
        try:
            if spec.accel_runtime == "numpy":
                buffer = io.BytesIO()
                self._copy_verified(
                    spec, spec.accel_key, spec.accel_sha256, spec.accel_size, buffer
                )
                model: Any = NativeLinear.from_bytes(buffer.getvalue())
            else:
                model = self._deserialize(
                    spec, spec.accel_key, spec.accel_sha256, spec.accel_size, "onnx"
                )
        except Exception as error:  # the verified original is always there to fall back to
            # A missing or altered copy (ModelregError, OSError), or one this release cannot
            # load (an ONNX file from a newer converter, say).
            log.warning(
                "%s conversion of %s v%d not used (%s); serving with scikit-learn",
                spec.accel_runtime,
                spec.name,
                spec.version,
                error,
            )
            return None
        signature = dict(spec.signature or {})
        wanted = signature.get("methods", ["predict"])
        if isinstance(model, NativeLinear):
            methods = {m: getattr(model, m) for m in wanted if m in model.methods}
            runtime = "numpy"
        else:
            model.label_classes(signature.get("classes"))
            methods = {
                m: getattr(model, m)
                for m in wanted
                if m == "predict" or len(model.session.get_outputs()) > 1
            }
            runtime = "onnxruntime"
        extra_bytes = 0
        if spec.format in LIBRARY_FROM_ROWS:
            methods, extra_bytes = self._library_for_large_batches(spec, methods)
        plan = build_input_plan(
            signature, max_rows=self.max_rows, methods=methods.keys(), needs_dataframe=False
        )
        servable = Servable(
            plan=plan,
            methods=methods,
            classes=signature.get("classes"),
            runtime=runtime,
            format=spec.format,
            **_tensor_types(model),
        )
        return model, servable, estimate_nbytes(model, spec.accel_size) + extra_bytes

    def _library_for_large_batches(
        self, spec: VersionSpec, methods: dict[str, Callable[[Any], Any]]
    ) -> tuple[dict[str, Callable[[Any], Any]], int]:
        """The graph's methods, with large batches sent to the library's own predict
        (serving/boosters/routing.py); the graph alone when the original cannot load."""
        try:
            original = self._deserialize(
                spec, spec.artifact_key, spec.sha256, spec.size, spec.format
            )
        except Exception as error:  # no library here, say: the verified graph serves alone
            log.info("%s v%d: the graph serves every batch (%s)", spec.name, spec.version, error)
            return methods, 0
        original.label_classes((spec.signature or {}).get("classes"))
        from_rows = LIBRARY_FROM_ROWS[spec.format]
        routed = {
            name: by_rows(fn, getattr(original, name), from_rows)
            if callable(getattr(original, name, None))
            else fn
            for name, fn in methods.items()
        }
        return routed, estimate_nbytes(original, spec.size)

    def _copy_verified(
        self, spec: VersionSpec, key: str, sha256: str, expected_size: int, copy: Any
    ) -> None:
        digest = hashlib.sha256()
        size = 0
        try:
            with self.store.open(key) as source:
                while chunk := source.read(READ_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    copy.write(chunk)
        except ArtifactNotFound:
            log.error(
                "INTEGRITY: the artifact of %s v%d is missing from the store",
                spec.name,
                spec.version,
            )
            raise ArtifactIntegrityError(
                f"version {spec.version} of '{spec.name}' cannot be loaded: its artifact is "
                "missing from the store",
                {"version": str(spec.version), "sha256": sha256},
            ) from None
        except StorageError as error:
            log.warning(
                "artifact store unavailable loading %s v%d: %s", spec.name, spec.version, error
            )
            raise DependencyUnavailable(
                "the artifact store is unavailable; cached models keep serving"
            ) from None
        if size != expected_size or digest.hexdigest() != sha256:
            log.error(
                "INTEGRITY: %s v%d: stored bytes (%d bytes, sha256 %s) do not match the "
                "registry (%d bytes, sha256 %s); refusing to load",
                spec.name,
                spec.version,
                size,
                digest.hexdigest(),
                expected_size,
                sha256,
            )
            raise ArtifactIntegrityError(
                f"version {spec.version} of '{spec.name}' failed its integrity check: the stored "
                "artifact does not match the sha256 recorded at registration; it will not be "
                "loaded",
                {"version": str(spec.version), "sha256": sha256},
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
        if isinstance(model, BoosterModel):
            model.label_classes(classes)
        runtime = "onnxruntime" if spec.format == "onnx" else "sklearn"
        if spec.format in BOOSTER_FORMATS:
            runtime = spec.format
        if self.batching is not None and spec.format != "onnx":
            methods = self.batching.wrap(spec, plan, methods)
        return Servable(
            plan=plan,
            methods=methods,
            classes=classes,
            runtime=runtime,
            format=spec.format,
            **_tensor_types(model),
        )


def _tensor_types(model: Any) -> dict[str, tuple[str, ...]]:
    session = getattr(model, "session", None)
    if session is None:
        return {}
    return {
        "input_types": tuple(item.type for item in session.get_inputs()),
        "output_types": tuple(item.type for item in session.get_outputs()),
    }


@dataclass(frozen=True, slots=True)
class BatchingPolicy:
    """When and how to merge concurrent requests: only where a call's fixed cost dominates
    (measured at load time), so small fast models never wait for company."""

    max_wait_ms: float
    max_rows: int
    on_batch: Callable[[str, int, int, float], None] | None = None

    def wrap(
        self, spec: VersionSpec, plan: InputPlan, methods: dict[str, Callable[[Any], Any]]
    ) -> dict[str, Callable[[Any], Any]]:
        sample = _sample_row(spec, plan)
        if sample is None:
            return methods
        wrapped = dict(methods)
        for method, fn in methods.items():
            try:
                helps, info = batching_helps(fn, sample)
            except Exception as error:  # a model that cannot predict zeros decides nothing
                log.info(
                    "batching not measured for %s v%d %s: %s",
                    spec.name,
                    spec.version,
                    method,
                    error,
                )
                continue
            if not helps:
                continue
            wait = min(self.max_wait_ms, float(info.get("suggested_max_wait_ms", 2.0)))
            listener = None
            if self.on_batch is not None:
                listener = functools.partial(self.on_batch, spec.name)
            wrapped[method] = MicroBatcher(
                fn,
                max_wait_ms=wait,
                max_rows=self.max_rows,
                name=f"{spec.name} v{spec.version} {method}",
                on_batch=listener,
            )
            log.info(
                "batching %s v%d %s (1 row %.2f ms, %d rows %.2f ms; wait up to %.1f ms)",
                spec.name,
                spec.version,
                method,
                info.get("one_row_ms", 0),
                info.get("rows", 32),
                info.get("many_rows_ms", 0),
                wait,
            )
        return wrapped


def _sample_row(spec: VersionSpec, plan: InputPlan) -> Any:
    if spec.input_example:
        try:
            return rows_to_matrix(spec.input_example[:1], plan, "input_example")
        except ModelregError:
            return None
    if plan.n_features is None or plan.column_types is not None:
        return None
    zeros = np.zeros((1, plan.n_features))
    if plan.needs_dataframe and plan.feature_names:
        import pandas as pd

        return pd.DataFrame(zeros, columns=list(plan.feature_names))
    return zeros


def to_jsonable(values: Any) -> Any:
    """Predictions as something orjson serializes without copying numeric arrays."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "fiub":
            return np.ascontiguousarray(values)
        return values.tolist()
    return values
