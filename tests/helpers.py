"""Request helpers for API tests."""

from __future__ import annotations

import io
import json
from typing import Any


def register(
    client,
    name: str,
    artifact: bytes,
    metadata: dict[str, Any] | None = None,
    filename: str = "model.joblib",
    headers: dict[str, str] | None = None,
):
    """POST a version as multipart; returns the Flask test response."""
    meta = {"format": "joblib", **(metadata or {})}
    return client.post(
        f"/models/{name}/versions",
        data={"artifact": (io.BytesIO(artifact), filename), "metadata": json.dumps(meta)},
        content_type="multipart/form-data",
        headers=headers or {},
    )


def problem(response) -> dict[str, Any]:
    """Assert the response is problem+json and return its body."""
    assert response.headers["Content-Type"].startswith("application/problem+json"), (
        response.status_code,
        response.data[:300],
    )
    body = response.get_json(force=True)
    assert body["status"] == response.status_code
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def assert_linear_agreement(model, rows, got) -> None:
    """A linear model's served answers agree with scikit-learn's within the documented bound
    (serving.linear.NativeLinear.error_bound): the same products, perhaps summed in another
    order by another BLAS kernel."""
    import numpy as np

    from serving.linear import native_linear

    expected = np.asarray(model.predict(rows), dtype=np.float64)
    got = np.asarray(got, dtype=np.float64).reshape(expected.shape)
    numeric = np.asarray(rows, dtype=np.float64)
    bound = native_linear(model).error_bound(numeric).reshape(expected.shape)
    excess = np.abs(got - expected) - bound
    assert np.all(excess <= 0), f"beyond the bound by up to {excess.max():.3g}"
