"""Large XGBoost batches to XGBoost's own predict, small ones to the verified graph.

ONNX Runtime's tree ensemble walks a row's trees one node at a time; XGBoost predicts blocks
of rows together. Measured with one thread on a 100-tree, depth-6, 8-feature model: 1 row
14 µs (graph) vs 330 µs (XGBoost), 500 rows about even (2.1 vs 1.5 ms), 10,000 rows 40 vs
14 ms. The graph was verified against XGBoost at registration, and XGBoost is the reference
itself, so either answer is the model's within the recorded tolerance. LightGBM's own
predict is slower than the graph at every size measured: it is not routed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# formats -> the batch size from which the library's predict is faster than the graph
LIBRARY_FROM_ROWS = {"xgboost": 500}


def by_rows(
    small: Callable[[Any], Any], large: Callable[[Any], Any], from_rows: int
) -> Callable[[Any], Any]:
    """`large` for batches of `from_rows` rows and more, `small` below."""

    def predict(X: Any) -> Any:
        return large(X) if len(X) >= from_rows else small(X)

    predict.__name__ = getattr(small, "__name__", "predict")
    return predict
