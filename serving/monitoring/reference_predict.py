"""Predictions on a reference table, for its profile: the version is loaded (verified) as
for serving and called on the reference in chunks of its row limit. Rows with a missing
value are left out unless the model accepts missing values."""

from __future__ import annotations

from typing import Any

import numpy as np

from registry.errors import InvalidInput
from registry.monitoring.reference import FIELD, ReferenceTable
from serving.dataplane import DataPlane
from serving.inputs import columns_to_matrix, rows_to_matrix
from serving.runtime import call_model


def reference_predictor(dataplane: DataPlane) -> Any:
    def predict(name: str, version: int, table: ReferenceTable) -> tuple[np.ndarray, list[int]]:
        _, loaded = dataplane.warm(name, str(version))
        servable = loaded.extra
        plan = servable.plan
        columns = table.columns
        if plan.feature_names is not None:
            absent = [c for c in plan.feature_names if c not in table.values]
            if absent:
                raise InvalidInput(
                    "the reference lacks some of the model's features",
                    {FIELD: f"missing columns {absent[:10]}"},
                )
            columns = plan.feature_names
        elif plan.n_features is not None and len(columns) != plan.n_features:
            raise InvalidInput(
                "the reference does not have the model's number of features",
                {FIELD: f"{len(columns)} feature columns for a model of {plan.n_features}"},
            )
        values = [table.values[c] for c in columns]
        kept = [
            i
            for i in range(table.n_rows)
            if plan.allow_missing or all(col[i] is not None for col in values)
        ]
        if not kept:
            raise InvalidInput(
                "no reference row is complete", {FIELD: "every row has a missing value"}
            )
        outputs = []
        for start in range(0, len(kept), plan.max_rows):
            rows = kept[start : start + plan.max_rows]
            if plan.feature_names is not None:
                chunk = {c: [table.values[c][i] for i in rows] for c in columns}
                X = columns_to_matrix(chunk, plan, FIELD)
            else:
                X = rows_to_matrix([[col[i] for col in values] for i in rows], plan, FIELD)
            outputs.append(np.asarray(call_model(servable, "predict", X, FIELD)))
        return np.concatenate(outputs), kept

    return predict
