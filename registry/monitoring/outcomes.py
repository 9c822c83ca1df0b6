"""The outcome comparison of a traffic policy's variants.

Every labelled row a variant served through the alias since the experiment began (the
policy's `started_at`) gives a per-row loss (live_metrics.row_losses); each candidate is
compared with the control by the always-valid sequential test (sequential.walk), replayed
in the order the labels arrived. With several candidates each comparison runs at
alpha / (number of candidates) (Bonferroni), so the chance of any false verdict stays
below alpha. Only rows in the payload log can be joined to labels: the payload-log rate
decides how fast a comparison can conclude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.monitoring import live_metrics
from registry.monitoring.sequential import MIN_PER_ARM, Comparison, walk
from registry.monitoring.tables import FeedbackLabel, PayloadLogEntry

ALPHA = 0.05
Row = tuple[str, Any, Any, Any]  # (method, output, label, classes)


@dataclass(frozen=True, slots=True)
class Labelled:
    order: int  # the label's id: when the outcome became known
    version: int
    row: Row


def labelled_rows(
    session: Session, name: str, alias: str, versions: list[int], since: datetime
) -> list[Labelled]:
    """Labelled rows the alias's variants served since `since`, in label-arrival order."""
    entries = list(
        session.scalars(
            select(PayloadLogEntry)
            .where(
                PayloadLogEntry.model == name,
                PayloadLogEntry.version.in_(versions),
                PayloadLogEntry.variant == alias,
                PayloadLogEntry.at >= since,
            )
            .order_by(PayloadLogEntry.id)
        )
    )
    ids = list({e.request_id for e in entries if e.request_id})
    labels: dict[tuple[str, int], tuple[int, Any]] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        query = select(
            FeedbackLabel.id, FeedbackLabel.request_id, FeedbackLabel.row, FeedbackLabel.label
        ).where(FeedbackLabel.model == name, FeedbackLabel.request_id.in_(ids[start : start + 500]))
        labels.update({(rid, row): (lid, label) for lid, rid, row, label in session.execute(query)})
    out = []
    for entry in entries:
        for index, output in enumerate(entry.outputs):
            found = labels.get((entry.request_id, index))
            if found is not None and found[1] is not None:
                row = (entry.method, output, found[1], entry.classes)
                out.append(Labelled(found[0], entry.version, row))
    out.sort(key=lambda labelled: labelled.order)
    return out


def compare_variants(
    session: Session,
    name: str,
    alias: str,
    control: int,
    candidates: list[int],
    since: datetime,
    *,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """The outcome section of GET .../policy/stats."""
    rows = labelled_rows(session, name, alias, [control, *candidates], since)
    per_version: dict[int, list[Row]] = {}
    for labelled in rows:
        per_version.setdefault(labelled.version, []).append(labelled.row)
    report: dict[str, Any] = {
        "since": since.isoformat(),
        "control": control,
        "alpha": alpha,
        "min_labels_per_arm": MIN_PER_ARM,
        "loss": None,
        "variants": [
            {"version": v, **_arm_metrics(per_version.get(v, []))} for v in [control, *candidates]
        ],
        "comparisons": [],
    }
    if not rows:
        report["comparisons"] = [_unjudged(v) for v in candidates]
        return report
    loss, losses = live_metrics.row_losses([labelled.row for labelled in rows])
    report["loss"] = loss
    each = alpha / max(len(candidates), 1)
    for candidate in candidates:
        result = _walk(rows, losses, control, candidate, each)
        report["comparisons"].append(_comparison(candidate, result, each))
    return report


def candidate_comparison(
    session: Session, name: str, alias: str, control: int, candidate: int, since: datetime
) -> tuple[str | None, Comparison | None]:
    """(loss name, comparison) of one candidate with the control, for the canary's
    guardrail; (None, None) before any labelled row."""
    rows = labelled_rows(session, name, alias, [control, candidate], since)
    if not rows:
        return None, None
    loss, losses = live_metrics.row_losses([labelled.row for labelled in rows])
    return loss, _walk(rows, losses, control, candidate, ALPHA)


def _walk(
    rows: list[Labelled], losses: list[float], control: int, candidate: int, alpha: float
) -> Comparison:
    """The sequential test of `candidate` against `control` over their rows, in order."""
    pairs = [
        (0 if labelled.version == control else 1, value)
        for labelled, value in zip(rows, losses, strict=True)
        if labelled.version in (control, candidate)
    ]
    return walk(pairs, alpha=alpha, lower_is_better=True)


def _arm_metrics(rows: list[Row]) -> dict[str, Any]:
    return live_metrics.metrics(rows) if rows else {"labels": 0}


def _unjudged(candidate: int) -> dict[str, Any]:
    return {
        "candidate": candidate,
        "verdict": "inconclusive",
        "difference": None,
        "ci": [None, None],
        "p_value": 1.0,
        "labels": [0, 0],
    }


def _comparison(candidate: int, result: Comparison, alpha: float) -> dict[str, Any]:
    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    judged = min(result.n_control, result.n_candidate) >= MIN_PER_ARM
    return {
        "candidate": candidate,
        # "better": the candidate's mean loss is lower than the control's
        "verdict": result.verdict,
        "difference": result.difference if judged else None,  # candidate - control
        "ci": [finite(result.ci_low), finite(result.ci_high)],
        "p_value": result.p_value,
        "alpha": alpha,
        "labels": [result.n_control, result.n_candidate],
    }
