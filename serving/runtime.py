"""The serving state of one process: the reference resolver, the model loader and cache, and
the pre-promotion gate. Requests reach it through the data plane (serving/dataplane.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from registry.bounded import BoundedLookups
from registry.changes import (
    AliasMoved,
    ModelRemoved,
    RegistryChange,
    VersionRemoved,
    VersionStatusChanged,
)
from registry.errors import (
    ArtifactIntegrityError,
    DependencyUnavailable,
    InvalidInput,
    ModelregError,
    NotFound,
    PromotionRefused,
)
from registry.names import Reference
from registry.records import VersionRecord
from serving.cache import ModelCache, VersionKey
from serving.formats import TrustPolicy
from serving.inputs import rows_to_matrix
from serving.loader import BatchingPolicy, ModelLoader, Servable, VersionSpec
from serving.resolver import Fetch, ReferenceResolver, spec_from_record
from storage import ArtifactStore

log = logging.getLogger(__name__)


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

    def check_version(self, record: VersionRecord) -> dict[str, Any]:
        """The pre-promotion gate: load (sha256 verified) and predict the input example.
        Returns what was checked, for the promote event."""
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
        servable: Servable = loaded.extra
        checked: dict[str, Any] = {
            "sha256": record.sha256,
            "integrity": "sha256 verified at load",
            "runtime": servable.runtime,
            "input_example_rows": len(record.input_example or ()),
            "methods": [],
        }
        if not record.input_example:
            return checked
        try:
            X = rows_to_matrix(record.input_example, servable.plan, "input_example")
            for method in servable.methods:
                call_model(servable, method, X)
                checked["methods"].append(method)
        except ModelregError as error:
            raise PromotionRefused(
                f"version {record.version} was not promoted: its input example failed "
                f"({error.detail})",
                error.errors,
            ) from None
        return checked

    def alias_moved(self, name: str, alias: str) -> None:
        self.resolver.forget_alias(name, alias)

    def forget_model(self, name: str) -> None:
        """The model was deleted here: stop serving any of its versions in this process."""
        self.resolver.forget_model(name)
        self.cache.evict_where(lambda key: key.name == name)

    def forget_version(self, name: str, version: int) -> None:
        """The version was deleted here."""
        self.resolver.forget_version(name, version, deleted=True)
        self.cache.evict_where(lambda key: key.name == name and key.version == version)

    def on_registry_change(self, change: RegistryChange) -> None:
        """Listener for committed registry changes (the unit of work calls it after commit)."""
        if isinstance(change, AliasMoved):
            self.alias_moved(change.name, change.alias)
        elif isinstance(change, VersionRemoved):
            self.forget_version(change.name, change.version)
        elif isinstance(change, VersionStatusChanged):
            # Read its record again (its status); the loaded model stays: a pinned request
            # may still use an archived version.
            self.resolver.forget_version(change.name, change.version)
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
