"""The serving side of one process: resolve a reference, get the model from the cache, predict."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from registry.bounded import BoundedLookups
from registry.changes import AliasMoved, ModelRemoved, RegistryChange, VersionRemoved
from registry.errors import (
    ArtifactIntegrityError,
    DependencyUnavailable,
    InvalidInput,
    ModelregError,
    NotFound,
    PromotionRefused,
)
from registry.names import Reference, parse_reference
from registry.records import VersionRecord
from serving.cache import LoadedModel, ModelCache, VersionKey
from serving.formats import TrustPolicy
from serving.inputs import decode_predict_body, rows_to_matrix
from serving.loader import BatchingPolicy, ModelLoader, Servable, VersionSpec, to_jsonable
from serving.resolver import Fetch, ReferenceResolver, spec_from_record
from storage import ArtifactStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prediction:
    name: str
    version: int
    method: str
    predictions: Any
    classes: list[Any] | None
    runtime: str
    stale: bool


# Parsed references, so the hot path does not re-validate the same few strings.
_REFERENCES: dict[str, Reference] = {}


def parse_ref(ref: str) -> Reference:
    parsed = parse_reference(ref)
    if parsed is None:
        raise NotFound(f"{ref!r} is not a version number, an alias or 'latest'")
    return parsed


class ServingRuntime:
    def __init__(
        self,
        fetch: Fetch,
        store: ArtifactStore,
        config: Any,
        on_cache_event: Callable[[str, VersionKey, dict], None] | None = None,
        on_batch: Callable[[str, int, int, float], None] | None = None,
        lookups: BoundedLookups | None = None,
    ) -> None:
        self._fetch = fetch
        self.resolver = ReferenceResolver(
            fetch,
            refresh_seconds=config.ALIAS_REFRESH_SECONDS,
            lookups=lookups,
            lookup_timeout=config.REGISTRY_LOOKUP_TIMEOUT,
        )
        self.loader = ModelLoader(
            store,
            self._spec_for_key,
            trust=TrustPolicy.from_config(config),
            max_rows=config.MAX_PREDICT_ROWS,
            onnx_threads=config.ONNX_THREADS,
            accelerate=config.ACCELERATE != "off",
            batching=None
            if config.BATCHING == "off"
            else BatchingPolicy(
                max_wait_ms=config.BATCH_MAX_WAIT_MS,
                max_rows=config.BATCH_MAX_ROWS,
                on_batch=on_batch,
            ),
        )
        self.cache = ModelCache(
            self.loader,
            max_models=config.MODEL_CACHE_MAX_MODELS,
            max_bytes=config.MODEL_CACHE_MAX_BYTES,
            on_event=on_cache_event,
        )

    def _spec_for_key(self, key: VersionKey) -> VersionSpec:
        spec = self.resolver.spec_for(key.name, key.version)
        if spec is None:
            spec = spec_from_record(self._fetch(key.name, Reference(version=key.version)))
        if spec.sha256 != key.sha256:
            raise NotFound(f"version {key.version} of '{key.name}' is no longer the one requested")
        return spec

    def _loaded(self, name: str, ref: str) -> tuple[LoadedModel, bool]:
        resolution = self.resolver.resolve(name, parse_ref(ref))
        return self.cache.get_or_load(resolution.spec.key), resolution.stale

    def predict(self, name: str, ref: str, body: bytes) -> Prediction:
        loaded, stale = self._loaded(name, ref)
        servable: Servable = loaded.extra
        decoded = decode_predict_body(body, servable.plan)
        output = call_model(servable, decoded.method, decoded.X)
        classes = servable.classes if decoded.method == "predict_proba" else None
        return Prediction(
            name,
            loaded.key.version,
            decoded.method,
            to_jsonable(output),
            classes,
            servable.runtime,
            stale,
        )

    def predict_cached(self, name: str, ref: str, body: bytes) -> Prediction | None:
        """`predict` when it needs no registry lookup and no load; None otherwise.

        Errors (a bad body, a model refusing the input) still raise, as in `predict`, and
        count nothing in the cache's statistics.
        """
        reference = _REFERENCES.get(ref)
        if reference is None:
            reference = parse_reference(ref)
            if reference is None:
                return None
            if len(_REFERENCES) < 4096:
                _REFERENCES[ref] = reference
        resolution = self.resolver.peek(name, reference)
        if resolution is None:
            return None
        loaded = self.cache.peek(resolution.spec.key)
        if loaded is None:
            return None
        servable: Servable = loaded.extra
        decoded = decode_predict_body(body, servable.plan)
        output = call_model(servable, decoded.method, decoded.X)
        # Counted only now: a request that fails here is answered (and counted) by `predict`.
        self.cache.touch(loaded.key)
        return Prediction(
            name,
            loaded.key.version,
            decoded.method,
            to_jsonable(output),
            servable.classes if decoded.method == "predict_proba" else None,
            servable.runtime,
            resolution.stale,
        )

    def check_version(self, record: VersionRecord) -> None:
        """The pre-promotion gate: load (sha256 verified) and predict the input example."""
        spec = spec_from_record(record)
        self.resolver.remember(record)
        try:
            loaded = self.cache.get_or_load(spec.key)
        except ArtifactIntegrityError as error:
            raise PromotionRefused(
                f"version {record.version} was not promoted: {error.detail}", error.errors
            ) from None
        except DependencyUnavailable:
            raise  # the store or database is down: try again later, the version is not bad
        except ModelregError as error:
            raise PromotionRefused(
                f"version {record.version} was not promoted: it could not be loaded "
                f"({error.detail})",
                {"version": error.detail},
            ) from None
        if not record.input_example:
            return
        servable: Servable = loaded.extra
        try:
            X = rows_to_matrix(record.input_example, servable.plan, "input_example")
            for method in servable.methods:
                call_model(servable, method, X)
        except ModelregError as error:
            raise PromotionRefused(
                f"version {record.version} was not promoted: its input example failed "
                f"({error.detail})",
                error.errors,
            ) from None

    def warm(self, name: str, ref: str) -> LoadedModel:
        return self._loaded(name, ref)[0]

    def evict(self, name: str, ref: str) -> int:
        reference = parse_ref(ref)
        if reference.version is not None:
            return self.cache.evict_where(
                lambda key: key.name == name and key.version == reference.version
            )
        spec = self.resolver.resolve(name, reference).spec
        return int(self.cache.evict(spec.key))

    def alias_moved(self, name: str, alias: str) -> None:
        self.resolver.forget_alias(name, alias)

    def forget_model(self, name: str) -> None:
        """The model was deleted here: stop serving any of its versions in this process."""
        self.resolver.forget_model(name)
        self.cache.evict_where(lambda key: key.name == name)

    def forget_version(self, name: str, version: int) -> None:
        self.resolver.forget_version(name, version)
        self.cache.evict_where(lambda key: key.name == name and key.version == version)

    def on_registry_change(self, change: RegistryChange) -> None:
        """Listener for committed registry changes (the unit of work calls it after commit)."""
        if isinstance(change, AliasMoved):
            self.alias_moved(change.name, change.alias)
        elif isinstance(change, VersionRemoved):
            self.forget_version(change.name, change.version)
        elif isinstance(change, ModelRemoved):
            self.forget_model(change.name)


def call_model(servable: Servable, method: str, X: Any, field: str = "instances") -> Any:
    """Run one model method; a model that refuses valid-looking input is the client's 422."""
    try:
        return servable.methods[method](X)
    except (ValueError, TypeError, KeyError, IndexError) as error:
        # The input passed the signature checks but the model still refused it (an unknown
        # category, a value out of range...): the client's problem, not a server fault.
        raise InvalidInput(
            f"the model could not {method} this input: {error}",
            {field: f"{type(error).__name__}: {error}"[:500]},
        ) from None
