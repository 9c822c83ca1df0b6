"""NUL characters cannot be stored (PostgreSQL refuses them in text): always a clean 4xx."""

from __future__ import annotations

import pytest

from tests.conftest import fit_linear, joblib_bytes
from tests.helpers import problem, register

REQUESTS = [
    ("GET", "/models?q=%00", None, 422),
    ("GET", "/models?tag=%00", None, 422),
    ("GET", "/models?tag=a:%00", None, 422),
    ("GET", "/models/m/events?type=%00", None, 422),
    ("DELETE", "/tokens/a%00", None, 404),
    ("POST", "/models/a%00/1/predict", {"instances": [[1, 2, 3]]}, 404),
    ("GET", "/v2/models/a%00", None, 404),
    ("POST", "/models", {"name": "m2", "description": "a\u0000b"}, 422),
    ("PATCH", "/models/m", {"description": "a\u0000b"}, 422),
    ("PATCH", "/models/m", {"reason": "\u0000"}, 422),
    ("PATCH", "/models/m", {"tags": {"k\u0000": "v"}}, 422),
    ("DELETE", "/models/m?reason=%00", None, 422),
    ("POST", "/models/m/versions/1/promote", {"reason": "\u0000"}, 422),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), REQUESTS)
def test_nul_characters_are_refused_cleanly(client, method, path, body, status):
    assert register(client, "m", joblib_bytes(fit_linear())).status_code == 201
    response = client.open(path, method=method, json=body)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    if not path.startswith("/v2"):
        problem(response)
    assert client.get("/models/m").get_json()["description"] == ""
