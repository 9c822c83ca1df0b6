"""The serving data plane: one protocol-neutral path from a model reference to an answer.

Native predict, V2 infer and the inline fast path only translate requests and answers; they
reach models through this class alone (no protocol touches the resolver, the cache or the
registry services). One inference runs:

    resolve the reference      an alias, a version number, `latest`, or V2's default alias
    get the servable           from the cache; a miss loads it (verified), unless memory_only
    decode the batch           the protocol's decoder, against the servable's input plan
    call the model             one call per requested method
    encode the answer          the protocol's encoder
    record                     statistics, then the observers (where traffic policies and
                               monitoring attach)

`memory_only` is the fast path's mode: when the answer needs a registry lookup or a load,
`NotInMemory` is raised before anything is decoded or called, so stepping aside never runs a
request twice. Every other failure raises the domain error the protocol turns into its answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from registry.errors import DependencyUnavailable, InvalidInput, MalformedRequest, NotFound
from registry.names import Reference, parse_reference
from serving.cache import LoadedModel
from serving.loader import Servable
from serving.policies import CompiledPolicy, OnRoute, PolicyStats
from serving.resolver import Resolution
from serving.runtime import ServingRuntime, call_model
from serving.stats import InferenceStats

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ALIAS = "production"
_MAX_PARSED_REFERENCES = 4096
_MAX_ROUTED = 4096


class NotInMemory(Exception):
    """A memory-only inference would need a registry lookup or a model load."""


# Per-request objects are plain (not frozen) slotted dataclasses: a frozen one's __init__
# costs a setattr call per field, on the path of every prediction.
@dataclass(slots=True)
class Batch:
    """A decoded input batch: the model's input and the methods to run on it, in order."""

    X: Any
    methods: tuple[str, ...]
    rows: int
    field: str = "instances"  # where a model's refusal is reported in the error


@dataclass(slots=True)
class Inference:
    """What one inference produced, before any protocol encodes it."""

    name: str
    version: int
    resolution: Resolution
    servable: Servable
    batch: Batch
    outputs: tuple[Any, ...]  # raw model outputs, one per batch.methods
    variant: str = ""  # the alias whose traffic policy chose this version, else ""

    @property
    def runtime(self) -> str:
        return self.servable.runtime

    @property
    def stale(self) -> bool:
        return self.resolution.stale


@dataclass(slots=True)
class Served(Generic[T]):
    inference: Inference
    payload: T


Decoder = Callable[[Servable], Batch]
Encoder = Callable[[Inference], T]
Observer = Callable[[Inference], None]
# The unit key of a request for a sticky policy (its header or input field), or None.
UnitKey = Callable[[CompiledPolicy], str | None]


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


class DataPlane:
    def __init__(
        self,
        runtime: ServingRuntime,
        *,
        ready_versions: Callable[[str], list[int]],
        alias_refresh_seconds: float,
        stats: InferenceStats | None = None,
        clock: Callable[[], int] = time.perf_counter_ns,
        on_policy_route: OnRoute | None = None,
    ) -> None:
        self._resolver = runtime.resolver
        self._cache = runtime.cache
        # (id of a variant's pinned Resolution, stale, id of the policy) -> (that pinned
        # Resolution, that policy, the routed Resolution): the entry holds both objects, so
        # their ids stay theirs while it exists.
        self._routed: dict[tuple[int, bool, int], tuple[Resolution, Any, Resolution]] = {}
        self.policy_stats = PolicyStats(on_route=on_policy_route)
        # Where shadow copies go (serving/shadow_process.py); None: not run, not counted.
        self.shadows: Any = None
        self._ready_versions = ready_versions
        self._alias_refresh = alias_refresh_seconds
        self._missing_default = _MissingDefaultAlias()
        # Versions unloaded on request (V2 repository unload): not ready until loaded again.
        self._unloaded: set[tuple[str, int]] = set()
        self._references: dict[str, Reference] = {}
        self._clock = clock
        self.stats = stats or InferenceStats()
        # Called with every successful inference, after its answer is encoded (traffic
        # policies and monitoring attach here). An observer that raises is logged and skipped.
        self.observers: list[Observer] = []
        # Called with (name, version, error) when a request's input is refused (by decoding
        # or by the model): monitoring counts refused inputs per field.
        self.refusal_observers: list[Callable[[str, int, Exception], None]] = []

    # -- references --------------------------------------------------------------------

    def parse(self, ref: str) -> Reference:
        """A path's reference, parsed once per distinct string (the hot path sees few)."""
        reference = self._references.get(ref)
        if reference is None:
            reference = parse_reference(ref)
            if reference is None:
                raise NotFound(f"{ref!r} is not a version number, an alias or 'latest'")
            if len(self._references) < _MAX_PARSED_REFERENCES:
                self._references[ref] = reference
        return reference

    def resolve(self, name: str, ref: str | None, *, memory_only: bool = False) -> Resolution:
        """`ref` (number, alias or latest) or, when None, the default alias: `production`
        when the model has it, else `latest`."""
        if ref is not None:
            reference = self.parse(ref)
            if memory_only:
                resolution = self._resolver.peek(name, reference)
                if resolution is None:
                    raise NotInMemory
                return resolution
            return self._resolver.resolve(name, reference)
        if memory_only:
            raise NotInMemory  # the default-alias rule is cheap enough off the fast path
        return self._resolve_default(name)

    def _resolve_default(self, name: str) -> Resolution:
        # "This model has no production alias" is remembered for the alias refresh period,
        # so such a model does not cost a registry query per request.
        missing = self._missing_default
        until = missing.get(name)
        now = time.monotonic()
        if until is None or now >= until:
            try:
                resolution = self._resolver.resolve(name, Reference(alias=DEFAULT_ALIAS))
            except NotFound:
                missing.remember(name, now + self._alias_refresh)
            except DependencyUnavailable:
                if until is None:
                    raise
                # Known to have no production alias a moment ago: serve latest's last known
                # mapping (the resolver marks it stale) rather than failing.
            else:
                if until is not None:
                    missing.forget(name)
                return resolution
        return self._resolver.resolve(name, Reference(latest=True))

    # -- models ------------------------------------------------------------------------

    def load(self, resolution: Resolution, *, memory_only: bool = False) -> LoadedModel:
        key = resolution.spec.key
        if memory_only:
            loaded = self._cache.peek(key)
            if loaded is None:
                raise NotInMemory
            self._cache.touch(key)
            return loaded
        if self._unloaded:
            self._unloaded.discard((key.name, key.version))
        return self._cache.get_or_load(key)

    def infer(
        self,
        name: str,
        ref: str | None,
        decode: Decoder,
        encode: Encoder[T],
        *,
        memory_only: bool = False,
        unit: UnitKey | None = None,
    ) -> Served[T]:
        """One inference, from reference to encoded answer (see the module docstring).
        On an alias with a traffic policy, the policy picks the version (`unit` gives a
        sticky policy its unit key); a pinned version never goes through a policy."""
        clock = self._clock
        started = clock()
        resolution = self.resolve(name, ref, memory_only=memory_only)
        policy = resolution.policy
        if policy is not None:
            resolution = self._route(name, resolution, policy, unit, memory_only)
        version = resolution.spec.version
        try:
            servable: Servable = self.load(resolution, memory_only=memory_only).extra
            queued = clock()
            batch = decode(servable)
            decoded = clock()
            methods = batch.methods
            if len(methods) == 1:  # the usual case, without a generator per request
                outputs: tuple[Any, ...] = (call_model(servable, methods[0], batch.X, batch.field),)
            else:
                outputs = tuple(
                    call_model(servable, method, batch.X, batch.field) for method in methods
                )
            inferred = clock()
            inference = Inference(
                name, version, resolution, servable, batch, outputs, policy.alias if policy else ""
            )
            payload = encode(inference)
            encoded = clock()
        except NotInMemory:
            raise
        except BaseException as error:
            self.stats.record_failure(name, version, clock() - started)
            if policy is not None:
                self.policy_stats.failure(name, policy, version)
            if self.refusal_observers and isinstance(error, InvalidInput | MalformedRequest):
                self._notify_refusal(name, version, error)
            raise
        self.stats.record_success(
            name,
            version,
            rows=batch.rows,
            queue_ns=queued - started,
            input_ns=decoded - queued,
            infer_ns=inferred - decoded,
            output_ns=encoded - inferred,
            total_ns=encoded - started,
        )
        if policy is not None:
            self.policy_stats.success(name, policy, version, (encoded - started) / 1e9, outputs[0])
            if policy.shadows and self.shadows is not None:
                self.shadows.offer(name, policy, decode, outputs)
        if self.observers:
            self._notify(inference)
        return Served(inference, payload)

    # -- traffic policies --------------------------------------------------------------

    def _route(
        self,
        name: str,
        resolution: Resolution,
        policy: CompiledPolicy,
        unit: UnitKey | None,
        memory_only: bool,
    ) -> Resolution:
        """The resolution of the variant the policy assigns this request to."""
        key = unit(policy) if unit is not None and (policy.header or policy.field) else None
        version = policy.versions[policy.assign(key)]
        if version == resolution.spec.version:
            return resolution
        pinned = self._resolver.pinned(name, version)
        if pinned is None:
            if self._resolver.gone(name, version):
                return resolution  # the variant was deleted since: its share goes to control
            if memory_only:
                raise NotInMemory
            try:
                pinned = self._resolver.resolve(name, Reference(version=version))
            except NotFound:
                self._resolver.mark_gone(name, version)  # not asked again per request
                return resolution
            except DependencyUnavailable:
                return resolution  # the registry is down: the control answers from memory
        memo_key = (id(pinned), resolution.stale, id(policy))
        memo = self._routed.get(memo_key)
        if memo is not None:  # one Resolution per (variant, policy), not per request
            return memo[2]
        spec = pinned.spec
        if spec.status != "ready":
            return resolution  # archived since the policy was set: the control answers
        if len(self._routed) >= _MAX_ROUTED:
            self._routed.clear()
        routed = Resolution(spec, resolution.stale, policy)
        self._routed[memo_key] = (pinned, policy, routed)
        return routed

    def run_copy(self, name: str, version: int, decode: Decoder) -> tuple[Any, ...]:
        """A shadow copy's outputs (in the shadow process): may load, never answers anyone,
        not counted in this process's statistics nor seen by its observers."""
        spec = self._resolver.resolve(name, Reference(version=version)).spec
        servable: Servable = self._cache.get_or_load(spec.key).extra
        batch = decode(servable)
        return tuple(call_model(servable, m, batch.X, batch.field) for m in batch.methods)

    def _notify(self, inference: Inference) -> None:
        for observer in self.observers:
            try:
                observer(inference)
            except Exception:
                log.exception("an inference observer failed (%s)", observer)

    def _notify_refusal(self, name: str, version: int, error: Exception) -> None:
        for observer in self.refusal_observers:
            try:
                observer(name, version, error)
            except Exception:
                log.exception("a refusal observer failed (%s)", observer)

    # -- the model repository ------------------------------------------------------------

    def warm(self, name: str, ref: str | None) -> tuple[Resolution, LoadedModel]:
        resolution = self.resolve(name, ref)
        return resolution, self.load(resolution)

    def unload(self, name: str, ref: str | None) -> tuple[Resolution, int]:
        """Evict the version `ref` resolves to and keep it not ready (`is_unloaded`) until
        something loads it again: a warm, a V2 load or an inference."""
        resolution = self.resolve(name, ref)
        version = resolution.spec.version
        evicted = self.evict(name, str(version))
        if len(self._unloaded) >= _MAX_PARSED_REFERENCES:
            self._unloaded.clear()  # bounded; forgetting only makes a version ready again
        self._unloaded.add((name, version))
        return resolution, evicted

    def is_unloaded(self, resolution: Resolution) -> bool:
        key = resolution.spec.key
        return (key.name, key.version) in self._unloaded and self._cache.peek(key) is None

    def evict(self, name: str, ref: str | None) -> int:
        """Drop a version from this process's cache: every cached copy of a pinned version,
        or the one an alias (or the default alias) resolves to."""
        if ref is not None:
            reference = self.parse(ref)
            if reference.version is not None:
                return self._cache.evict_where(
                    lambda key: key.name == name and key.version == reference.version
                )
        return int(self._cache.evict(self.resolve(name, ref).spec.key))

    def cached_models(self) -> list[dict[str, Any]]:
        return self._cache.entries()

    def load_failures(self) -> list[dict[str, Any]]:
        return self._cache.failures()

    def cache_stats(self) -> dict[str, Any]:
        return self._cache.stats()

    def knows_model(self, name: str) -> bool:
        """Whether this process has resolved a version of `name` (metrics may name it)."""
        return self._resolver.knows_model(name)

    def ready_versions(self, name: str, resolved: int) -> list[int]:
        """The model's ready version numbers, or what this process knows when the registry
        does not answer."""
        try:
            return sorted(self._ready_versions(name))
        except DependencyUnavailable:
            return [resolved]
