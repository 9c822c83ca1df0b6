"""Every endpoint x every kind of caller: the exact status, and no write without the right role."""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from registry import auth
from registry.db import utcnow
from tests.conftest import fit_linear, joblib_bytes, make_config

ROLES = ["reader", "publisher", "operator", "admin"]
DENIED = ["none", "bad", "malformed", "expired", "revoked"]
CALLERS = DENIED + ROLES
_counter = itertools.count()


@dataclass
class World:
    client: Any
    secrets: dict[str, str]
    artifact: bytes
    app: Any

    def headers(self, caller: str) -> dict[str, str]:
        if caller == "none":
            return {}
        if caller == "bad":
            return {"Authorization": "Bearer mr_this-is-not-a-token"}
        if caller == "malformed":
            return {"Authorization": "Basic dXNlcjpwYXNz"}
        return {"Authorization": f"Bearer {self.secrets[caller]}"}

    def admin(self, method: str, path: str, **kwargs: Any):
        response = self.client.open(path, method=method, headers=self.headers("admin"), **kwargs)
        assert response.status_code < 300, (method, path, response.status_code, response.data)
        return response

    def model(self, versions: int = 0, promote: tuple[int, ...] = ()) -> str:
        name = f"m{next(_counter)}"
        self.admin("POST", "/models", json={"name": name})
        for _ in range(versions):
            self.admin(
                "POST",
                f"/models/{name}/versions",
                data=_multipart(self.artifact),
                content_type="multipart/form-data",
            )
        for version in promote:
            self.admin("POST", f"/models/{name}/versions/{version}/promote", json={})
        return name

    def event_count(self, name: str) -> int:
        response = self.client.get(
            f"/models/{name}/events?limit=500", headers=self.headers("admin")
        )
        return len(response.get_json()["events"]) if response.status_code == 200 else -1


def _multipart(artifact: bytes) -> dict[str, Any]:
    return {
        "artifact": (io.BytesIO(artifact), "m.joblib"),
        "metadata": json.dumps({"format": "joblib"}),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from manage import create_app

    tmp = tmp_path_factory.mktemp("auth")
    app = create_app(make_config(tmp, AUTH_DISABLED=False, AUTH_CACHE_SECONDS=0.0))
    uow = app.extensions["modelreg"].uow
    secrets = {}
    for role in ROLES:
        secrets[role], _ = auth.create_token(uow, name=f"{role}-token", role=role, actor="test")
    secrets["expired"], _ = auth.create_token(
        uow, name="expired-token", role="admin", actor="test", expires_in=timedelta(days=1)
    )
    secrets["revoked"], _ = auth.create_token(uow, name="revoked-token", role="admin", actor="test")
    auth.revoke_token(uow, "revoked-token")
    with uow(write=True) as work:
        work.session.execute(
            text("UPDATE api_tokens SET expires_at = :past WHERE name = :n"),
            {"past": (utcnow() - timedelta(minutes=1)).replace(tzinfo=None), "n": "expired-token"},
        )
        work.commit()
    yield World(app.test_client(), secrets, joblib_bytes(fit_linear()), app)
    app.extensions["modelreg"].engine.dispose()


# Each endpoint: (method, the role it needs, success status, setup returning (path, kwargs, name)).
Setup = Callable[[World], tuple[str, dict[str, Any], str | None]]


def _predict_body() -> dict[str, Any]:
    return {"json": {"instances": [[0.1, 0.2, 0.3]]}}


ENDPOINTS: dict[str, tuple[str, str, int, Setup]] = {
    "list models": ("GET", "reader", 200, lambda w: ("/models", {}, None)),
    "create model": (
        "POST",
        "publisher",
        201,
        lambda w: ("/models", {"json": {"name": f"new{next(_counter)}"}}, None),
    ),
    "get model": ("GET", "reader", 200, lambda w: (f"/models/{(n := w.model())}", {}, n)),
    "patch model": (
        "PATCH",
        "publisher",
        200,
        lambda w: (f"/models/{(n := w.model())}", {"json": {"description": "x"}}, n),
    ),
    "delete model": ("DELETE", "operator", 204, lambda w: (f"/models/{(n := w.model(1))}", {}, n)),
    "register version": (
        "POST",
        "publisher",
        201,
        lambda w: (
            f"/models/{(n := w.model())}/versions",
            {"data": _multipart(w.artifact), "content_type": "multipart/form-data"},
            n,
        ),
    ),
    "list versions": (
        "GET",
        "reader",
        200,
        lambda w: (f"/models/{(n := w.model(1))}/versions", {}, n),
    ),
    "get version": (
        "GET",
        "reader",
        200,
        lambda w: (f"/models/{(n := w.model(1))}/versions/1", {}, n),
    ),
    "patch version": (
        "PATCH",
        "publisher",
        200,
        lambda w: (f"/models/{(n := w.model(1))}/versions/1", {"json": {"description": "d"}}, n),
    ),
    "archive version": (
        "PATCH",
        "operator",
        200,
        lambda w: (f"/models/{(n := w.model(1))}/versions/1", {"json": {"status": "archived"}}, n),
    ),
    "delete version": (
        "DELETE",
        "operator",
        204,
        lambda w: (f"/models/{(n := w.model(1))}/versions/1", {}, n),
    ),
    "download artifact": (
        "GET",
        "reader",
        200,
        lambda w: (f"/models/{(n := w.model(1))}/versions/1/artifact", {}, n),
    ),
    "promote": (
        "POST",
        "operator",
        200,
        lambda w: (f"/models/{(n := w.model(1))}/versions/1/promote", {"json": {}}, n),
    ),
    "rollback": (
        "POST",
        "operator",
        200,
        lambda w: (f"/models/{(n := w.model(2, (1, 2)))}/aliases/production/rollback", {}, n),
    ),
    "list aliases": (
        "GET",
        "reader",
        200,
        lambda w: (f"/models/{(n := w.model(1, (1,)))}/aliases", {}, n),
    ),
    "delete alias": (
        "DELETE",
        "operator",
        204,
        lambda w: (f"/models/{(n := w.model(1, (1,)))}/aliases/production", {}, n),
    ),
    "events": ("GET", "reader", 200, lambda w: (f"/models/{(n := w.model())}/events", {}, n)),
    "predict": (
        "POST",
        "reader",
        200,
        lambda w: (f"/models/{(n := w.model(1))}/1/predict", _predict_body(), n),
    ),
    "cache status": ("GET", "reader", 200, lambda w: ("/serving/cache", {}, None)),
    "warm": ("POST", "operator", 200, lambda w: (f"/serving/cache/{(n := w.model(1))}/1", {}, n)),
    "evict": (
        "DELETE",
        "operator",
        200,
        lambda w: (f"/serving/cache/{(n := w.model(1))}/1", {}, n),
    ),
    "create token": (
        "POST",
        "admin",
        201,
        lambda w: ("/tokens", {"json": {"name": f"t{next(_counter)}", "role": "reader"}}, None),
    ),
    "list tokens": ("GET", "admin", 200, lambda w: ("/tokens", {}, None)),
    "revoke token": (
        "DELETE",
        "admin",
        200,
        lambda w: (
            f"/tokens/{w.admin('POST', '/tokens', json={'name': f't{next(_counter)}', 'role': 'reader'}).get_json()['name']}",  # noqa: E501
            {},
            None,
        ),
    ),
    # Open Inference Protocol routes: the same roles, errors as {"error": ...}.
    "v2 model metadata": (
        "GET",
        "reader",
        200,
        lambda w: (f"/v2/models/{(n := w.model(1))}/versions/1", {}, n),
    ),
    "v2 model ready": (
        "GET",
        "reader",
        200,
        lambda w: (f"/v2/models/{(n := w.model(1))}/versions/1/ready", {}, n),
    ),
    "v2 infer": (
        "POST",
        "reader",
        200,
        lambda w: (
            f"/v2/models/{(n := w.model(1))}/versions/1/infer",
            {
                "json": {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 3],
                            "datatype": "FP64",
                            "data": [0.1, 0.2, 0.3],
                        }
                    ]
                }
            },
            n,
        ),
    ),
    "v2 stats": ("GET", "reader", 200, lambda w: ("/v2/models/stats", {}, None)),
    "v2 repository index": (
        "POST",
        "reader",
        200,
        lambda w: ("/v2/repository/index", {"json": {}}, None),
    ),
    "v2 load": (
        "POST",
        "operator",
        200,
        lambda w: (f"/v2/repository/models/{(n := w.model(1, (1,)))}/load", {"json": {}}, n),
    ),
    "v2 unload": (
        "POST",
        "operator",
        200,
        lambda w: (f"/v2/repository/models/{(n := w.model(1, (1,)))}/unload", {"json": {}}, n),
    ),
}


def _expected(endpoint: str, caller: str) -> int:
    _, needed, success, _ = ENDPOINTS[endpoint]
    if caller in DENIED:
        return 401
    return success if ROLES.index(caller) >= ROLES.index(needed) else 403


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_endpoint_answers_exact_status_for_each_caller(world: World, endpoint: str, caller: str):
    method, _, _, setup = ENDPOINTS[endpoint]
    path, kwargs, name = setup(world)
    before = world.event_count(name) if name else None
    response = world.client.open(path, method=method, headers=world.headers(caller), **kwargs)
    expected = _expected(endpoint, caller)
    assert response.status_code == expected, (endpoint, caller, response.data[:300])
    if expected in (401, 403):
        if path.startswith("/v2/"):
            assert "error" in response.get_json()
        else:
            assert response.headers["Content-Type"].startswith("application/problem+json")
        if expected == 401:
            assert response.headers["WWW-Authenticate"] == "Bearer"
        if name is not None:
            assert world.event_count(name) == before, "a refused request changed something"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("caller", ["none", "bad"])
def test_health_endpoints_are_public(world: World, path: str, caller: str):
    assert world.client.get(path, headers=world.headers(caller)).status_code == 200


def test_denied_create_model_stores_nothing(world: World):
    for caller in ["none", "bad", "reader"]:
        world.client.post(
            "/models", json={"name": f"ghost-{caller}"}, headers=world.headers(caller)
        )
        assert (
            world.client.get(f"/models/ghost-{caller}", headers=world.headers("admin")).status_code
            == 404
        )


def test_actor_in_events_is_the_token_name(world: World):
    name = world.model(1)
    world.client.post(
        f"/models/{name}/versions/1/promote",
        json={"reason": "ship it"},
        headers=world.headers("operator"),
    )
    events = world.client.get(f"/models/{name}/events", headers=world.headers("reader"))
    promote = events.get_json()["events"][0]
    assert (promote["type"], promote["actor"], promote["reason"]) == (
        "promote",
        "operator-token",
        "ship it",
    )


def test_model_scoped_token(world: World):
    allowed = world.model(1)
    other = world.model(1)
    created = world.admin(
        "POST",
        "/tokens",
        json={"name": f"scoped{next(_counter)}", "role": "reader", "models": [allowed]},
    )
    headers = {"Authorization": f"Bearer {created.get_json()['token']}"}
    body = _predict_body()["json"]
    assert (
        world.client.post(f"/models/{allowed}/1/predict", json=body, headers=headers).status_code
        == 200
    )
    denied = world.client.post(f"/models/{other}/1/predict", json=body, headers=headers)
    assert denied.status_code == 403
    listed = world.client.get("/models?limit=500", headers=headers).get_json()["models"]
    assert [m["name"] for m in listed] == [allowed]


def test_revocation_takes_effect(world: World):
    created = world.admin(
        "POST", "/tokens", json={"name": f"short{next(_counter)}", "role": "reader"}
    ).get_json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert world.client.get("/models", headers=headers).status_code == 200
    world.admin("DELETE", f"/tokens/{created['name']}")
    assert world.client.get("/models", headers=headers).status_code == 401


def test_secrets_are_stored_hashed_and_never_logged(world: World, caplog):
    caplog.set_level(logging.DEBUG)
    created = world.admin(
        "POST", "/tokens", json={"name": f"secret{next(_counter)}", "role": "admin"}
    ).get_json()
    secret = created["token"]
    assert secret.startswith("mr_") and len(secret) >= 40
    world.client.get("/models", headers={"Authorization": f"Bearer {secret}"})
    world.client.get("/models", headers={"Authorization": f"Bearer {secret}x"})
    uow = world.app.extensions["modelreg"].uow
    with uow() as work:
        rows = work.session.execute(text("SELECT * FROM api_tokens")).all()
    dumped = repr(rows)
    assert secret not in dumped and secret[10:] not in dumped
    assert auth.hash_token(secret) in dumped
    assert secret not in caplog.text
    listed = world.admin("GET", "/tokens").get_data(as_text=True)
    assert secret not in listed
