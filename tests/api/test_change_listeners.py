"""Registry changes reach listeners (the serving cache among them) after commit, and only then."""

from __future__ import annotations

import pytest

from registry.changes import AliasMoved, ModelRemoved, VersionRemoved
from tests.conftest import make_config
from tests.helpers import register


@pytest.fixture
def heard(app) -> list:
    changes: list = []
    app.extensions["modelreg"].uow.subscribe(changes.append)
    return changes


def _promote(client, name: str, version: int, **body):
    return client.post(f"/models/{name}/versions/{version}/promote", json=body)


def test_a_committed_change_reaches_the_listeners(client, heard, linear_bytes):
    assert register(client, "m", linear_bytes).status_code == 201
    assert _promote(client, "m", 1).status_code == 200
    assert client.delete("/models/m/aliases/production").status_code == 204
    assert client.delete("/models/m/versions/1").status_code == 204
    assert client.delete("/models/m").status_code == 204
    assert heard == [
        AliasMoved("m", "latest"),
        AliasMoved("m", "production"),
        AliasMoved("m", "production"),
        VersionRemoved("m", 1),
        ModelRemoved("m"),
    ]


def test_a_refused_change_reaches_no_listener(client, heard, linear_bytes):
    register(client, "m", linear_bytes)
    register(client, "m", linear_bytes)
    assert _promote(client, "m", 1).status_code == 200
    heard.clear()
    assert _promote(client, "m", 2, expected_version=2).status_code == 409
    assert client.delete("/models/m/versions/1").status_code == 409  # aliased
    assert client.delete("/models/m").status_code == 409  # has aliases
    assert heard == []


def test_a_failing_listener_does_not_fail_the_request(tmp_path, database_url, linear_bytes, caplog):
    from manage import create_app

    # A minute of alias staleness: only the serving listener explains a move seen at once.
    app = create_app(make_config(tmp_path, database_url, ALIAS_REFRESH_SECONDS=60.0))
    client = app.test_client()

    def broken(change):
        raise RuntimeError("listener bug")

    app.extensions["modelreg"].uow.subscribe(broken)  # after the serving runtime's listener
    register(client, "m", linear_bytes)
    register(client, "m", linear_bytes)
    assert _promote(client, "m", 1).status_code == 200
    assert _predict(client, "m", "production")["version"] == 1  # the alias is now cached
    assert _promote(client, "m", 2).status_code == 200
    assert "a registry change listener failed" in caplog.text
    assert client.get("/models/m").json["aliases"] == {"production": 2}
    assert _predict(client, "m", "production")["version"] == 2  # the cache still heard
    app.extensions["modelreg"].engine.dispose()


def _predict(client, name: str, ref: str) -> dict:
    response = client.post(f"/models/{name}/{ref}/predict", json={"instances": [[1, 2, 3]]})
    assert response.status_code == 200, response.json
    return response.json


def test_the_sql_unit_of_work_delivers_only_what_it_committed(app):
    uow = app.extensions["modelreg"].uow
    heard: list = []
    uow.subscribe(heard.append)
    with uow(write=True) as work:
        work.announce(ModelRemoved("rolled-back"))
    assert heard == []
    with uow(write=True) as work:
        work.announce(ModelRemoved("dropped"))
        work.rollback()
        work.announce(ModelRemoved("committed"))
        work.commit()
        assert heard == []  # not while the unit of work is still open
    assert heard == [ModelRemoved("committed")]
    with pytest.raises(ValueError), uow(write=True) as work:
        work.announce(ModelRemoved("then-failed"))
        work.commit()
        raise ValueError("after the commit")
    assert heard[-1] == ModelRemoved("then-failed")  # committed is committed
