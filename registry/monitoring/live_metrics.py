"""Live metrics: labels joined to logged predictions by (request id, row), per window.

Regression: RMSE and MAE. Classification: accuracy, and log loss where probabilities were
logged (`predict_proba` requests). Only logged requests can be joined: the payload-log rate
(MONITOR_PAYLOAD_SAMPLE, or the monitor's `payload_sample`) decides how many that is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.monitoring import store
from registry.monitoring.tables import PayloadLogEntry

LOG_LOSS_EPSILON = 1e-15


def joined_rows(
    session: Session, name: str, version: int, since: datetime
) -> list[tuple[str, int, str, Any, Any, list[Any] | None]]:
    """(variant, window start, method, output, label, classes) for every labelled row."""
    entries = store.logged_payload(session, name, version, since)
    labels = store.labels_for(session, name, [e.request_id for e in entries if e.request_id])
    out = []
    for entry in entries:
        for row, output in enumerate(entry.outputs):
            label = labels.get((entry.request_id, row))
            if label is not None:
                out.append(
                    (entry.variant, entry.window_start, entry.method, output, label, entry.classes)
                )
    return out


def windows(
    session: Session, name: str, version: int, *, since: datetime, width: int
) -> dict[tuple[str, int], dict[str, Any]]:
    groups: dict[tuple[str, int], list[tuple[str, Any, Any, Any]]] = {}
    for variant, start, method, output, label, classes in joined_rows(
        session, name, version, since
    ):
        groups.setdefault((variant, start - start % width), []).append(
            (method, output, label, classes)
        )
    return {key: metrics(rows) for key, rows in groups.items()}


def metrics(rows: list[tuple[str, Any, Any, Any]]) -> dict[str, Any]:
    """The metrics of labelled rows: regression when every label and output is a number."""
    if all(
        _number(label) and _number(_scalar(output))
        for method, output, label, _ in rows
        if method == "predict"
    ) and all(method == "predict" for method, *_ in rows):
        predicted = np.asarray([float(_scalar(o)) for _, o, _, _ in rows])
        truth = np.asarray([float(label) for _, _, label, _ in rows])
        if not _looks_like_classes(truth, predicted):
            error = predicted - truth
            return {
                "task": "regression",
                "labels": len(rows),
                "rmse": float(np.sqrt(np.mean(error**2))),
                "mae": float(np.mean(np.abs(error))),
            }
    hits = 0
    losses: list[float] = []
    for method, output, label, classes in rows:
        if method == "predict_proba" and classes is not None and isinstance(output, list):
            best = classes[int(np.argmax(output))]
            hits += _same(best, label)
            index = next((i for i, c in enumerate(classes) if _same(c, label)), None)
            p = output[index] if index is not None else 0.0
            losses.append(-math.log(min(max(float(p), LOG_LOSS_EPSILON), 1.0)))
        else:
            hits += _same(_scalar(output), label)
    out: dict[str, Any] = {
        "task": "classification",
        "labels": len(rows),
        "accuracy": hits / len(rows),
    }
    if losses:
        out["log_loss"] = float(np.mean(losses))
    return out


def row_losses(rows: list[tuple[str, Any, Any, Any]]) -> tuple[str, list[float]]:
    """A per-row loss for every labelled row, lower being better, in a form that averages to
    the window metric: squared error (regression; RMSE is the root of its mean), log loss
    (every row a `predict_proba` with its classes), else 0/1 error (1 - accuracy)."""
    if metrics(rows)["task"] == "regression":
        return "squared_error", [
            (float(_scalar(output)) - float(label)) ** 2 for _, output, label, _ in rows
        ]
    if all(
        method == "predict_proba" and classes is not None and isinstance(output, list)
        for method, output, _, classes in rows
    ):
        losses = []
        for _, output, label, classes in rows:
            index = next((i for i, c in enumerate(classes) if _same(c, label)), None)
            p = output[index] if index is not None else 0.0
            losses.append(-math.log(min(max(float(p), LOG_LOSS_EPSILON), 1.0)))
        return "log_loss", losses
    errors = []
    for method, output, label, classes in rows:
        if method == "predict_proba" and classes is not None and isinstance(output, list):
            output = classes[int(np.argmax(output))]
        errors.append(0.0 if _same(_scalar(output), label) else 1.0)
    return "error_rate", errors


def _looks_like_classes(truth: np.ndarray, predicted: np.ndarray) -> bool:
    """Integer labels and integer predictions from a classifier's `predict`."""
    return bool(
        np.all(truth == np.round(truth))
        and np.all(predicted == np.round(predicted))
        and np.unique(truth).size <= 20
    )


def _scalar(output: Any) -> Any:
    while isinstance(output, list) and len(output) == 1:
        output = output[0]
    return output


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def count_matches(
    session: Session, name: str, keys: set[tuple[str, int]], request_ids: Iterable[str]
) -> int:
    """How many (request id, row) keys point at a logged prediction."""
    ids = list(set(request_ids))
    matched = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        query = select(PayloadLogEntry.request_id, PayloadLogEntry.outputs).where(
            PayloadLogEntry.model == name, PayloadLogEntry.request_id.in_(chunk)
        )
        for request_id, outputs in session.execute(query):
            matched += sum(1 for row in range(len(outputs)) if (request_id, row) in keys)
    return matched
