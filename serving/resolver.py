"""Reference resolution: `<name>/<ref>` -> the immutable identity of one version.

- A pinned version (`price/7`) is looked up once and then never again: version numbers are
  never reused, so (name, version) always means the same bytes. The exception: the other
  variants of an alias's traffic policy are read again with the alias, for their status.
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
        self._lock = threading.Lock()
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
        # Counts the forgets: a read that started before one does not store what it read.
        self._generation = 0

    def resolve(self, name: str, ref: Reference) -> Resolution:
        if ref.version is not None:
            pinned = self._pinned.get((name, ref.version))
            if pinned is not None:
                return pinned
            record = self._lookups.call(
                ("ref", name, ref.version), lambda: self._fetch(name, ref), self._timeout
            )
            return self._remember(record)
        label = "latest" if ref.latest else str(ref.alias)
        known = self._floating.get((name, label))
        now = self._clock()
        if known is not None and now - known[1] < self._refresh:
            if now - known[1] >= self._ahead:
                self._refresh_ahead(name, ref, label)
            return known[0]
        if known is not None and now < self._unavailable_until:
            return Resolution(known[0].spec, True, known[0].policy)
        key = ("ref", name, label)
        generation = self._generation
        # One request refreshes; the others wait briefly for it, then answer from what is
        # known, so a slow database never takes every request thread.
        joining = known is not None and self._lookups.in_flight(key)
        try:
            record = self._lookups.call(
                key,
                lambda: self._fetch(name, ref),
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
        return self._store_fresh(name, label, ref, record, known, now, generation)

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
        """Remember what a read of (name, label) that started at `read_at` found."""
        spec = self._remember(record).spec
        policy = None
        if ref.alias is not None and record.policy:
            # The same revision as the one held: keep its compiled form (a refresh every
            # ALIAS_REFRESH_SECONDS would otherwise rebuild the bucket table each time).
            held = known[0].policy if known is not None else None
            if held is not None and held.revision == record.policy["revision"]:
                policy = held
            else:
                policy = compile_policy(label, record.policy)
            self._follow_variants(name, record.policy, spec.version)
        fresh = Resolution(spec, False, policy)
        with self._lock:
            if generation == self._generation:  # else forgotten meanwhile: not kept
                self._floating[(name, label)] = (fresh, read_at)
        return fresh

    def _refresh_ahead(self, name: str, ref: Reference, label: str) -> None:
        """Start a background re-read of (name, label) unless one is running."""
        if self._lookups.in_flight(("ref", name, label)):
            return
        known = self._floating.get((name, label))
        read_at = self._clock()
        generation = self._generation

        def refresh() -> VersionRecord:
            record = self._fetch(name, ref)
            self._store_fresh(name, label, ref, record, known, read_at, generation)
            return record  # what a request that joins this read expects

        self._lookups.start(("ref", name, label), refresh)

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

    def _remember(self, record: VersionRecord) -> Resolution:
        """Keep the record's version as a pinned Resolution; returns it."""
        spec = spec_from_record(record)
        key = (spec.name, spec.version)
        held = self._pinned.get(key)
        # Unchanged: the same object, so what is keyed by it (routed variants) stays valid.
        pinned = held if held is not None and held.spec == spec else Resolution(spec)
        with self._lock:
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
            for version in policy["spec"]["variants"]:
                number = version["version"]
                held = self._pinned.get((name, number))
                if number == control or held is None:
                    continue
                if statuses.get(number) != held.spec.status:
                    del self._pinned[(name, number)]
                    self._count(name, -1)

    def _count(self, name: str, change: int) -> None:
        """Keep _pinned_per_model in step with _pinned; the caller holds the lock."""
        left = self._pinned_per_model.get(name, 0) + change
        if left > 0:
            self._pinned_per_model[name] = left
        else:
            self._pinned_per_model.pop(name, None)

    def forget_alias(self, name: str, label: str) -> None:
        with self._lock:
            self._generation += 1
            self._floating.pop((name, label), None)
            self._floating.pop((name, "latest"), None)

    def forget_model(self, name: str) -> None:
        with self._lock:
            self._generation += 1
            for key in [k for k in self._floating if k[0] == name]:
                del self._floating[key]
            for key in [k for k in self._pinned if k[0] == name]:
                del self._pinned[key]
            self._pinned_per_model.pop(name, None)

    def forget_version(self, name: str, version: int) -> None:
        with self._lock:
            self._generation += 1
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
