"""The progressive canary's controller, inside every serving process: no scheduler to deploy.

Each tick (CANARY_TICK_SECONDS) the process flushes what it counted for running canaries;
the one holding the `canary` lease (a row in job_leases: one leader on PostgreSQL across
hosts, and simply this process on SQLite) judges them (registry/policies/canary.py). A leader
that dies stops renewing; another process takes the lease once it expires (a few ticks) and
goes on from the revision in the database, so no step is lost or applied twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from registry.monitoring.store import take_lease
from registry.policies import canary
from registry.unit_of_work import UnitOfWorkFactory
from serving.policies import PolicyStats

log = logging.getLogger(__name__)

LEASE = "canary"
PRUNE_SECONDS = 600.0


class CanaryController:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        stats: PolicyStats,
        promote: Callable[[str, int, str, int], Any],
        *,
        tick_seconds: float = 1.0,
        writer_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.uow = uow
        self.stats = stats
        self.promote = promote
        self.tick_seconds = tick_seconds
        self.writer_id = writer_id or f"{os.uname().nodename[:40]}:{os.getpid()}"
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    def flush(self) -> int:
        drained = self.stats.drain()
        if not drained:
            return 0
        with self.uow.session_factory() as session, session.begin():
            return canary.write_counts(session, self.writer_id, drained)

    def judge(self, *, lead: bool | None = None) -> list[tuple[str, str, str]]:
        """Judge every running canary if this process leads; (model, alias, decision)."""
        if lead is None:
            # Taking the lease is a write transaction: only worth it with a canary to judge
            # (one read, every tick, in every process).
            with self.uow.session_factory() as session:
                idle = not canary.running(session)
            if idle and time.monotonic() - self._last_prune < PRUNE_SECONDS:
                return []
            lead = take_lease(
                self.uow.session_factory, LEASE, self.writer_id, 3 * self.tick_seconds + 2
            )
        if not lead:
            return []
        done = []
        with self.uow.session_factory() as session:
            runs = canary.running(session)
            judged = [
                (
                    run,
                    canary.merged_counts(session, run.model, run.alias, run.revision),
                    canary.outcome_breach(session, run),
                )
                for run in runs
            ]
        now = self.clock()
        for run, counts, outcome in judged:
            decision = canary.decide(run, counts, now, outcome)
            if decision.kind == "advance":
                canary.advance(self.uow, run, now=now)
            elif decision.kind == "abort":
                canary.abort(self.uow, run, decision.reason)
            elif decision.kind == "complete":
                canary.complete(self.uow, run, self.promote)
            done.append((run.model, run.alias, decision.kind))
        self._prune_now_and_then(runs)
        return done

    def _prune_now_and_then(self, runs: list[canary.Running]) -> None:
        """Drop the counts of revisions no running canary needs, every PRUNE_SECONDS."""
        if time.monotonic() - self._last_prune >= PRUNE_SECONDS:
            self._last_prune = time.monotonic()
            keep = [(run.model, run.alias, run.revision) for run in runs]
            with self.uow.session_factory() as session, session.begin():
                canary.prune_counts(session, keep)

    def tick(self) -> None:
        self.stats.publish()  # the Prometheus counts of routed requests, once a tick
        self.flush()
        self.judge()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="modelreg-canary", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.tick()
            except Exception:
                log.warning("canary: a step failed; retrying next tick", exc_info=True)
