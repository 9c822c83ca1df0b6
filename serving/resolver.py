"""Reference resolution: `<name>/<ref>` -> the immutable identity of one version.

- A pinned version (`price/7`) is looked up once and then never again: version numbers are
  never reused, so (name, version) always means the same bytes. Its status can change:
  the statuses of an alias's policy variants come with the alias's read, and a variant
  whose status changed is read again at its next request.
- An alias or `latest` is remembered for at most `refresh_seconds` (the documented
  staleness bound: another process's promotion is seen within it); the process that moved
  the alias forgets its entry at once.
- When the registry database cannot be reached, the last known mapping keeps serving and is
  marked stale, so that a DB outage does not stop models already known to this process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from registry.bounded import BoundedLookups
from registry.errors import DependencyUnavailable
from registry.names import Reference
from registry.records import VersionRecord
from serving.loader import VersionSpec
from serving.policies import CompiledPolicy, compile_policy

log = logging.getLogger(__name__)

Fetch = Callable[[str, Reference], VersionRecord]
MAX_PINNED = 10_000
# After the registry fails to answer, stale answers are served without asking it again for
# this long, so that an outage does not add a connect timeout to every alias request.
OUTAGE_BACKOFF_SECONDS = 1.0
# The share of the refresh period after which a request starts a background re-read.
REFRESH_AHEAD = 0.8
# How long a request waits for a refresh another request started before answering stale.
FOLLOWER_WAIT_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Resolution:
    spec: VersionSpec
    stale: bool = False
    # The traffic policy of the alias this resolution answers, if any (serving/policies.py).
    policy: CompiledPolicy | None = None


def spec_from_record(record: VersionRecord) -> VersionSpec:
    blob = record.accel_blob
    return VersionSpec(
        name=record.name,
        version=record.version,
        sha256=record.sha256,
        size=record.size,
        artifact_key=record.artifact_key,
        format=record.format,
        status=record.status,
        signature=record.signature,
        input_example=record.input_example,
        accel_key=record.accel_key,
        accel_sha256=blob[0] if blob else None,
        accel_size=blob[1] if blob else None,
        accel_runtime=record.accel_runtime,
    )


class ReferenceResolver:
    def __init__(
        self,
        fetch: Fetch,
        *,
        refresh_seconds: float,
        lookups: BoundedLookups | None = None,
        lookup_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._refresh = refresh_seconds
        self._lookups = lookups or BoundedLookups(name="resolver")
        self._timeout = lookup_timeout
        self._clock = clock
        self._lock = threading.RLock()  # reentrant: a read is stored whole under it
        # (name, version) -> its Resolution: a pinned version's answer, made once (a frozen
        # dataclass costs a few attribute sets per instance)
        self._pinned: OrderedDict[tuple[str, int], Resolution] = OrderedDict()
        self._pinned_per_model: dict[str, int] = {}  # model name -> entries in _pinned
        # (name, alias or "latest") -> (fresh Resolution, when read): the spec and the alias's
        # compiled policy ride in the Resolution
        self._floating: dict[tuple[str, str], tuple[Resolution, float]] = {}
        self._unavailable_until = 0.0
        # A request that finds its alias older than this starts a re-read in the background,
        # so a busy alias is fresh again before its bound and never waits for the registry.
        self._ahead = refresh_seconds * REFRESH_AHEAD
        # Forgets per model name: a read that started before one does not store what it read.
        self._generations: dict[str, int] = {}
        # Versions known deleted (a model's version numbers are never reused): a policy's
        # variant among them answers as the control without asking the registry each time.
        self._gone: set[tuple[str, int]] = set()

    def resolve(self, name: str, ref: Reference) -> Resolution:
        if ref.version is not None:
            pinned = self._pinned.get((name, ref.version))
            if pinned is not None:
                return pinned
            generation = self._generation(name)
            record = self._lookups.call(
                ("ref", name, ref.version, generation),
                lambda: self._fetch(name, ref),
                self._timeout,
            )
            return self._remember(record, generation)
        label = "latest" if ref.latest else str(ref.alias)
        known = self._floating.get((name, label))
        now = self._clock()
        if known is not None and now - known[1] < self._refresh:
            if now - known[1] >= self._ahead:
                self._refresh_ahead(name, ref, label)
            return known[0]
        if known is not None and now < self._unavailable_until:
            return Resolution(known[0].spec, True, known[0].policy)
        generation = self._generation(name)
        # A read started before a forget is never joined: its key names the generation.
        key = ("ref", name, label, generation)
        # One request refreshes; the others wait briefly for it, then answer from what is
        # known, so a slow database never takes every request thread.
        joining = known is not None and self._lookups.in_flight(key)
        try:
            read_at, record = self._lookups.call(
                key,
                lambda: self._read(name, ref),
                FOLLOWER_WAIT_SECONDS if joining else self._timeout,
            )
        except DependencyUnavailable:
            if not joining:
                self._unavailable_until = self._clock() + OUTAGE_BACKOFF_SECONDS
            if known is None:
                raise
            log.warning(
                "registry unavailable; serving %s/%s from the last known mapping (version %d)",
                name,
                label,
                known[0].spec.version,
            )
            return Resolution(known[0].spec, True, known[0].policy)
        return self._store_fresh(name, label, ref, record, known, read_at, generation)

    def _read(self, name: str, ref: Reference) -> tuple[float, VersionRecord]:
        """A registry read and when it started (what it found is as old as that)."""
        started = self._clock()
        return started, self._fetch(name, ref)

    def _generation(self, name: str) -> int:
        return self._generations.get(name, 0)

    def _forgot(self, name: str) -> None:
        """The caller holds the lock."""
        self._generations[name] = self._generations.get(name, 0) + 1

    def _store_fresh(
        self,
        name: str,
        label: str,
        ref: Reference,
        record: VersionRecord,
        known: tuple[Resolution, float] | None,
        read_at: float,
        generation: int,
    ) -> Resolution:
        """Remember what a read of (name, label) that started at `read_at` found, unless
        this process forgot that model's mappings since the read started."""
        with self._lock:
            held = known[0].policy if known is not None else None
            policy = None
            if ref.alias is not None and record.policy:
                # The same revision as the one held: keep its compiled form (a refresh
                # every ALIAS_REFRESH_SECONDS would otherwise rebuild the bucket table).
                if held is not None and held.revision == record.policy["revision"]:
                    policy = held
                else:
                    policy = compile_policy(label, record.policy)
            if generation != self._generation(name):  # answered, not kept
                return Resolution(spec_from_record(record), False, policy)
            spec = self._remember(record).spec
            if policy is not None:
                self._follow_variants(name, record.policy, spec.version)
            fresh = Resolution(spec, False, policy)
            self._floating[(name, label)] = (fresh, read_at)
        return fresh

    def _refresh_ahead(self, name: str, ref: Reference, label: str) -> None:
        """Start a background re-read of (name, label) unless one is running or the
        registry failed a moment ago."""
        if self._clock() < self._unavailable_until:
            return
        generation = self._generation(name)
        key = ("ref", name, label, generation)
        if self._lookups.in_flight(key):
            return
        known = self._floating.get((name, label))

        def refresh() -> tuple[float, VersionRecord]:
            try:
                read_at, record = self._read(name, ref)
            except DependencyUnavailable:
                self._unavailable_until = self._clock() + OUTAGE_BACKOFF_SECONDS
                raise
            self._store_fresh(name, label, ref, record, known, read_at, generation)
            return read_at, record  # what a request that joins this read expects

        self._lookups.start(key, refresh)

    def peek(self, name: str, ref: Reference) -> Resolution | None:
        """What `resolve` would answer without asking the registry; None when it would ask."""
        if ref.version is not None:
            return self._pinned.get((name, ref.version))
        label = "latest" if ref.latest else str(ref.alias)
        known = self._floating.get((name, label))
        if known is None:
            return None
        now = self._clock()
        if now - known[1] < self._refresh:
            if now - known[1] >= self._ahead:
                self._refresh_ahead(name, ref, label)
            return known[0]
        if now < self._unavailable_until:
            return Resolution(known[0].spec, True, known[0].policy)
        return None

    def spec_for(self, name: str, version: int) -> VersionSpec | None:
        pinned = self._pinned.get((name, version))
        return pinned.spec if pinned is not None else None

    def pinned(self, name: str, version: int) -> Resolution | None:
        """The version's Resolution when known here (no registry lookup), else None. A new
        object whenever the version's record is read again (its status may have changed)."""
        return self._pinned.get((name, version))

    def knows_model(self, name: str) -> bool:
        """Whether a version of this model was resolved here (it exists, or did lately)."""
        return name in self._pinned_per_model

    def remember(self, record: VersionRecord) -> VersionSpec:
        return self._remember(record).spec

    def _remember(self, record: VersionRecord, generation: int | None = None) -> Resolution:
        """Keep the record's version as a pinned Resolution (unless its model was forgotten
        since `generation`); returns it."""
        spec = spec_from_record(record)
        key = (spec.name, spec.version)
        with self._lock:
            if generation is not None and generation != self._generation(spec.name):
                return Resolution(spec)  # read before a forget: answered, not kept
            held = self._pinned.get(key)
            # Unchanged: the same object, so what is keyed by it (routed variants) stays valid.
            pinned = held if held is not None and held.spec == spec else Resolution(spec)
            self._gone.discard(key)
            if key not in self._pinned:
                self._count(spec.name, 1)
            self._pinned[key] = pinned
            self._pinned.move_to_end(key)
            while len(self._pinned) > MAX_PINNED:
                self._count(self._pinned.popitem(last=False)[0][0], -1)
        return pinned

    def _follow_variants(self, name: str, policy: dict[str, Any], control: int) -> None:
        """Forget a variant whose status the alias's read found changed (archived, restored)
        or that is gone, so its next request reads it again: a variant archived or deleted
        through another process stops answering within the alias bound."""
        statuses = policy.get("statuses")
        if statuses is None:
            return
        with self._lock:
            for variant in policy["spec"]["variants"]:
                number = variant["version"]
                if number == control:
                    continue
                status = statuses.get(number)
                if status is None:
                    self.mark_gone(name, number)
                held = self._pinned.get((name, number))
                if held is not None and status != held.spec.status:
                    del self._pinned[(name, number)]
                    self._count(name, -1)

    def gone(self, name: str, version: int) -> bool:
        """Whether this version is known deleted."""
        return (name, version) in self._gone

    def mark_gone(self, name: str, version: int) -> None:
        with self._lock:
            if len(self._gone) >= MAX_PINNED:
                self._gone.clear()
            self._gone.add((name, version))

    def _count(self, name: str, change: int) -> None:
        """Keep _pinned_per_model in step with _pinned; the caller holds the lock."""
        left = self._pinned_per_model.get(name, 0) + change
        if left > 0:
            self._pinned_per_model[name] = left
        else:
            self._pinned_per_model.pop(name, None)

    def forget_alias(self, name: str, label: str) -> None:
        with self._lock:
            self._forgot(name)
            self._floating.pop((name, label), None)
            self._floating.pop((name, "latest"), None)

    def forget_model(self, name: str) -> None:
        with self._lock:
            self._forgot(name)
            # A model created again under this name numbers its versions from 1 again.
            self._gone = {key for key in self._gone if key[0] != name}
            for key in [k for k in self._floating if k[0] == name]:
                del self._floating[key]
            for key in [k for k in self._pinned if k[0] == name]:
                del self._pinned[key]
            self._pinned_per_model.pop(name, None)

    def forget_version(self, name: str, version: int, *, deleted: bool = False) -> None:
        with self._lock:
            self._forgot(name)
            if deleted:
                self.mark_gone(name, version)
            if self._pinned.pop((name, version), None) is not None:
                self._count(name, -1)
            for key in [
                k
                for k, (known, _) in self._floating.items()
                if k[0] == name and known.spec.version == version
            ]:
                del self._floating[key]
            self._floating.pop((name, "latest"), None)

    def known_versions(self) -> list[VersionSpec]:
        with self._lock:
            return [pinned.spec for pinned in self._pinned.values()]
