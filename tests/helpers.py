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
