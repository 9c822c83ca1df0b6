"""A token never reaches or grants more than it has: its models, its role, its expiry.

Each escape found by black-box testing has its test here: listings that showed models outside
a token's list, a model created outside it through the body, and tokens minted (or listed, or
revoked) beyond what the minting token holds. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest

from registry import auth
from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.helpers import problem, register

BODY = {"instances": [[0.1, 0.2, 0.3]]}


class World:
    def __init__(self, app) -> None:
        self.app = app
        self.client = app.test_client()
        self.uow = app.extensions["modelreg"].uow
        self.secrets: dict[str, str] = {}
        self.models = 0
        self.token("root", "admin")

    def token(self, name: str, role: str, **kwargs: Any) -> str:
        self.secrets[name], _ = auth.create_token(
            self.uow, name=name, role=role, actor="test", **kwargs
        )
        return self.secrets[name]

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[name]}"}

    def call(self, caller: str, method: str, path: str, **kwargs: Any):
        return self.client.open(path, method=method, headers=self.headers(caller), **kwargs)

    def model(self, name: str) -> None:
        self.models += 1  # distinct bytes for each model: distinct sha256
        artifact = joblib_bytes(fit_linear(offset=self.models))
        response = register(self.client, name, artifact, headers=self.headers("root"))
        assert response.status_code == 201, response.get_data(as_text=True)


@pytest.fixture
def world(tmp_path, database_url):
    from manage import create_app

    app = create_app(make_config(tmp_path, database_url, AUTH_DISABLED=False))
    yield World(app)
    app.extensions["modelreg"].engine.dispose()


# ---- listings --------------------------------------------------------------------------------


def test_cache_status_shows_only_the_models_in_the_token_scope(world):
    world.model("mine")
    world.model("theirs")
    world.model("broken")
    for name in ("mine", "theirs"):
        assert world.call("root", "POST", f"/models/{name}/1/predict", json=BODY).status_code == 200
    sha = world.call("root", "GET", "/models/broken/versions/1").get_json()["sha256"]
    world.app.extensions["modelreg"].store.delete(f"sha256/{sha[:2]}/{sha}")
    assert world.call("root", "POST", "/models/broken/1/predict", json=BODY).status_code == 503

    everything = world.call("root", "GET", "/serving/cache").get_json()
    assert {e["name"] for e in everything["models"]} == {"mine", "theirs"}
    assert [f["name"] for f in everything["failures"]] == ["broken"]

    world.token("scoped", "reader", models=["mine"])
    status = world.call("scoped", "GET", "/serving/cache")
    assert status.status_code == 200
    body = status.get_json()
    assert [e["name"] for e in body["models"]] == ["mine"]
    assert body["failures"] == []
    assert "theirs" not in status.get_data(as_text=True)
    assert sha not in status.get_data(as_text=True)

    world.token("scoped-broken", "reader", models=["broken"])
    body = world.call("scoped-broken", "GET", "/serving/cache").get_json()
    assert body["models"] == []
    assert [(f["name"], f["sha256"]) for f in body["failures"]] == [("broken", sha)]


def test_other_listings_show_only_the_models_in_the_token_scope(world):
    world.model("mine")
    world.model("theirs")
    for name in ("mine", "theirs"):
        assert world.call("root", "POST", f"/models/{name}/1/predict", json=BODY).status_code == 200
    world.token("scoped", "reader", models=["mine"])
    models = world.call("scoped", "GET", "/models?limit=500").get_json()["models"]
    assert [m["name"] for m in models] == ["mine"]
    index = world.call("scoped", "POST", "/v2/repository/index", json={}).get_json()
    assert [entry["name"] for entry in index] == ["mine"]
    stats = world.call("scoped", "GET", "/v2/models/stats").get_json()["model_stats"]
    assert [entry["name"] for entry in stats] == ["mine"]
    for path in ("/models/theirs/events", "/models/theirs/versions", "/v2/models/theirs/stats"):
        assert world.call("scoped", "GET", path).status_code == 403, path


# ---- creating models ---------------------------------------------------------------------------


def test_a_scoped_token_cannot_create_a_model_outside_its_scope(world):
    world.token("scoped", "operator", models=["mine"])
    refused = world.call("scoped", "POST", "/models", json={"name": "elsewhere"})
    assert refused.status_code == 403
    assert problem(refused)["errors"] == {"name": "outside this token's models"}
    assert world.call("root", "GET", "/models/elsewhere").status_code == 404

    created = world.call("scoped", "POST", "/models", json={"name": "mine"})
    assert created.status_code == 201, created.get_data(as_text=True)
    registered = register(
        world.client, "elsewhere", joblib_bytes(fit_linear()), headers=world.headers("scoped")
    )
    assert registered.status_code == 403
    assert world.call("root", "GET", "/models/elsewhere").status_code == 404


# ---- minting tokens ----------------------------------------------------------------------------


_minted = itertools.count()


def _mint(world: World, caller: str, **body: Any):
    body = {"name": f"minted-{next(_minted)}", "role": "reader", **body}
    return world.call(caller, "POST", "/tokens", json=body)


def test_a_scoped_admin_cannot_mint_an_unscoped_or_wider_token(world):
    world.token("scoped-admin", "admin", models=["a", "b"])
    for extra in ({}, {"models": None}, {"models": ["a", "c"]}, {"models": ["c"]}):
        for role in ("reader", "admin"):
            refused = _mint(world, "scoped-admin", role=role, **extra)
            assert refused.status_code == 403, (extra, role, refused.get_data(as_text=True))
            assert "models" in problem(refused)["errors"]
    granted = _mint(world, "scoped-admin", role="admin", models=["a"])
    assert granted.status_code == 201, granted.get_data(as_text=True)
    assert granted.get_json()["models"] == ["a"]
    assert _mint(world, "scoped-admin", models=["b", "a"]).status_code == 201
    minted = [
        t
        for t in world.call("root", "GET", "/tokens?limit=500").get_json()["tokens"]
        if t["name"].startswith("minted-")
    ]
    assert sorted(tuple(t["models"]) for t in minted) == [("a",), ("a", "b")]


def test_a_minted_token_cannot_outlive_the_token_that_minted_it(world):
    world.token("brief-admin", "admin", expires_in=timedelta(days=2))
    own = datetime.fromisoformat(
        next(
            t
            for t in world.call("root", "GET", "/tokens").get_json()["tokens"]
            if t["name"] == "brief-admin"
        )["expires_at"]
    )
    for extra in ({}, {"expires_in_days": None}, {"expires_in_days": 3}):
        refused = _mint(world, "brief-admin", **extra)
        assert refused.status_code == 403, (extra, refused.get_data(as_text=True))
        assert "expires_in_days" in problem(refused)["errors"]
    granted = _mint(world, "brief-admin", expires_in_days=1)
    assert granted.status_code == 201, granted.get_data(as_text=True)
    assert datetime.fromisoformat(granted.get_json()["expires_at"]) < own
    # An unlimited admin may still mint what it likes.
    assert _mint(world, "root", role="admin").status_code == 201


def test_the_role_is_never_above_the_minting_token_role(world):
    granted = auth.Identity("root", "admin")
    limited = auth.Identity("ops", "operator", frozenset({"a"}))
    assert auth.grant_problems(granted, role="admin", models=None, expires_at=None) == {}
    problems = auth.grant_problems(limited, role="admin", models=["a"], expires_at=None)
    assert set(problems) == {"role"}
    assert auth.grant_problems(limited, role="operator", models=["a"], expires_at=None) == {}


def test_a_scoped_admin_lists_and_revokes_only_tokens_within_its_reach(world):
    world.token("scoped-admin", "admin", models=["a", "b"])
    world.token("unscoped-reader", "reader")
    world.token("other-model", "reader", models=["c"])
    world.token("inside", "reader", models=["a"])
    listed = world.call("scoped-admin", "GET", "/tokens?limit=500").get_json()["tokens"]
    assert sorted(t["name"] for t in listed) == ["inside", "scoped-admin"]
    for name in ("root", "unscoped-reader", "other-model", "nobody"):
        refused = world.call("scoped-admin", "DELETE", f"/tokens/{name}")
        assert refused.status_code == 404, name
    assert world.call("unscoped-reader", "GET", "/models").status_code == 200
    assert world.call("root", "GET", "/models").status_code == 200
    revoked = world.call("scoped-admin", "DELETE", "/tokens/inside")
    assert revoked.status_code == 200
    assert world.call("inside", "GET", "/models").status_code == 401
