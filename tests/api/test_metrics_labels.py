"""Prometheus labels stay bounded: a client cannot add series (and memory, and scrape size) by
making up model names, versions, methods or paths, with or without a token."""

from __future__ import annotations

import random
import re
import string

import pytest

from registry import auth
from serving.metrics import OTHER_LABEL, UNKNOWN_MODEL
from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.helpers import register

SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{.*\})? ")


def series(client) -> set[str]:
    """Every sample's name and labels in /metrics (values left out)."""
    text = client.get("/metrics").get_data(as_text=True)
    return {
        m.group(1) + (m.group(2) or "") for line in text.splitlines() if (m := SAMPLE.match(line))
    }


def labelled(client, **labels: str) -> bool:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return any(
        all(w in s for w in wanted)
        for s in series(client)
        if s.startswith("modelreg_http_requests_total")
    )


@pytest.fixture
def world(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path, AUTH_DISABLED=False))
    secret, _ = auth.create_token(
        app.extensions["modelreg"].uow, name="ops", role="admin", actor="test"
    )
    client = app.test_client()
    token = {"Authorization": f"Bearer {secret}"}
    assert register(client, "price", joblib_bytes(fit_linear()), headers=token).status_code == 201
    yield client, token
    app.extensions["modelreg"].engine.dispose()


def _random(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=12))


def _requests(client, token, rng: random.Random) -> None:
    """One of each request a stranger (or a reader) can make up."""
    name = _random(rng)
    client.post(f"/models/{name}/1/predict", json={"instances": [[1, 2, 3]]})
    client.get(f"/v2/models/{name}/ready")
    client.post(f"/models/{name}/1/predict", json={"instances": [[1, 2, 3]]}, headers=token)
    client.get(f"/v2/models/{name}/ready", headers=token)
    client.get(f"/v2/models/{name}/versions/{rng.randrange(10**6)}/ready", headers=token)
    client.get(f"/models/{name}", headers=token)
    client.get(f"/models/{name}/versions/1/artifact", headers=token)
    # An existing model, with made-up versions and aliases, and without a token.
    client.post(
        f"/models/price/{rng.randrange(2, 10**6)}/predict", json={"instances": [[1]]}, headers=token
    )
    client.post(f"/models/price/{name}/predict", json={"instances": [[1]]}, headers=token)
    client.post("/models/price/1/predict", json={"instances": [[1, 2, 3]]})
    # Made-up methods and paths.
    client.open("/models/price/1/predict", method=name.upper(), headers=token)
    client.open(f"/{name}", method=name.upper())
    client.get(f"/{name}/{name}")


def test_a_thousand_made_up_requests_add_no_series(world):
    client, token = world
    rng = random.Random(12)
    _requests(client, token, rng)  # the placeholders' own series exist from now on
    series(client)  # and the scrape's own
    before = series(client)
    for _ in range(1_000 // 13 + 1):  # 13 requests each
        _requests(client, token, rng)
    after = series(client)
    assert after - before == set()
    assert not labelled(client, model=_random(random.Random(12)))


def test_real_models_are_labelled_only_after_authentication(world):
    client, token = world
    assert (
        client.post(
            "/models/price/1/predict", json={"instances": [[1, 2, 3]]}, headers=token
        ).status_code
        == 200
    )
    assert labelled(client, model="price", version="1", status="200")
    client.post("/models/price/1/predict", json={"instances": [[1, 2, 3]]})  # no token
    assert labelled(client, model=UNKNOWN_MODEL, status="401")
    assert not labelled(client, model="price", status="401")
    # A refused input on a model that exists still counts under its name.
    assert (
        client.post("/models/price/1/predict", json={"instances": [[1]]}, headers=token).status_code
        == 422
    )
    assert labelled(client, model="price", status="422")


def test_label_sets_are_capped(tmp_path):
    from manage import create_app

    app = create_app(make_config(tmp_path, METRICS_MAX_MODEL_LABELS=3))
    client = app.test_client()
    for n in range(5):
        assert register(client, f"m{n}", joblib_bytes(fit_linear())).status_code == 201
    for n in range(5):
        assert (
            client.post(f"/models/m{n}/1/predict", json={"instances": [[1, 2, 3]]}).status_code
            == 200
        )
    models = {
        m
        for s in series(client)
        if s.startswith("modelreg_http_requests_total")
        for m in re.findall(r'model="([^"]*)"', s)
    }
    assert OTHER_LABEL in models
    assert len(models - {"", UNKNOWN_MODEL, OTHER_LABEL}) <= 3
