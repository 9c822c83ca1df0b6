"""The UI's traffic policy and monitoring pages, on what the API serves (SQLite and
PostgreSQL, authentication off: the UI opens its session without asking, as the API acts as
the local admin)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.api.test_monitoring_api import (
    T0,
    _csv,
    _data,
    _fit,
    _monitoring,
    _predict,
    _register,
    app,  # noqa: F401 - the fixture: monitoring with a settable clock
)
from tests.ui_helpers import csrf_of


@pytest.fixture
def browser(app):  # noqa: F811
    client = app.test_client()
    response = client.get("/ui/signin")
    assert response.status_code == 302  # auth off: a session at once
    cookie = next(v for k, v in response.headers.items() if k == "Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return client


def test_the_monitoring_page_shows_windows_features_and_the_chart_data(app, browser):  # noqa: F811
    client = app.test_client()
    model, X, y = _fit()
    assert _register(client, "house", model, _csv(X, y), target="price").status_code == 201
    rng = np.random.default_rng(3)
    _predict(client, "house", "1", _data(rng, 300, shift=1.0)[0])  # sqft shifted by 1 sigma
    _monitoring(app).worker.flush()
    api = client.get(f"/models/house/versions/1/monitoring?since={T0}").get_json()
    page = browser.get(f"/ui/models/house/versions/1/monitoring?since={T0}")
    assert page.status_code == 200, page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    (window,) = api["windows"]
    sqft_psi = window["features"]["sqft"]["psi"]
    assert f"psi {sqft_psi:.3f}" in html
    assert '<th scope="col">sqft</th>' in html
    assert f"<td>{window['rows']}</td>" in html
    assert '"series": {"age"' in html or '"series":{"age"' in html
    assert browser.get("/ui/models/house/versions/1/monitoring?window=x").status_code == 422
    version_page = browser.get("/ui/models/house/versions/1").get_data(as_text=True)
    assert "500 reference rows" in version_page
    assert "<td>sqft</td><td>numeric</td><td>0.000</td><td>10</td>" in version_page


def test_the_policy_page_shows_variants_and_this_processs_stats(app, browser):  # noqa: F811
    client = app.test_client()
    for seed in (0, 1):
        assert _register(client, "house", _fit(seed)[0]).status_code == 201
    assert client.post("/models/house/versions/1/promote", json={}).status_code == 200
    none = browser.get("/ui/models/house/aliases/production/policy").get_data(as_text=True)
    assert "No policy: all of production's traffic goes to version 1" in none
    body = {"variants": [{"version": 1, "weight": 75}, {"version": 2, "weight": 25}]}
    put = client.put("/models/house/aliases/production/policy", json=body)
    assert put.status_code == 200, put.get_data(as_text=True)
    rng = np.random.default_rng(1)
    for _ in range(20):
        _predict(client, "house", "production", _data(rng, 1)[0])
    html = browser.get("/ui/models/house/aliases/production/policy").get_data(as_text=True)
    assert "Active, revision 1" in html
    assert "<td>75.0%</td>" in html and "<td>25.0%</td>" in html
    stats = client.get("/models/house/aliases/production/policy/stats").get_json()
    for variant in stats["variants"]:
        row = f'<tr data-version="{variant["version"]}"><td>v{variant["version"]}</td>'
        assert f"{row}<td>{variant['requests']}</td>" in html
    assert sum(v["requests"] for v in stats["variants"]) == 20
    missing = browser.get("/ui/models/house/aliases/staging/policy")
    assert missing.status_code == 404
    # Clearing is a compare-and-set on the revision the page showed.
    csrf = csrf_of(html)
    assert 'name="revision" value="1"' in html
    target = "/ui/models/house/aliases/production/policy/clear"
    form = {"csrf_token": csrf, "reason": "enough data"}
    assert browser.post(target, data={**form, "revision": "0"}).status_code == 409
    assert client.get("/models/house/aliases/production/policy").get_json()["state"] == "active"
    assert browser.post(target, data={"reason": "x", "revision": "1"}).status_code == 403
    cleared = browser.post(target, data={**form, "revision": "1"})
    assert cleared.status_code == 303
    assert client.get("/models/house/aliases/production/policy").get_json()["state"] == "none"
    event = client.get("/models/house/events").get_json()["events"][0]
    assert (event["type"], event["reason"]) == ("policy_cleared", "enough data")


def test_the_policy_page_shows_a_canarys_progress(app, browser):  # noqa: F811
    client = app.test_client()
    for seed in (0, 1):
        assert _register(client, "house", _fit(seed)[0]).status_code == 201
    assert client.post("/models/house/versions/1/promote", json={}).status_code == 200
    body = {
        "variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}],
        "canary": {"steps": [5, 25, 100], "bake_seconds": 600, "min_requests": 500},
    }
    put = client.put("/models/house/aliases/production/policy", json=body)
    assert put.status_code == 200, put.get_data(as_text=True)
    html = browser.get("/ui/models/house/aliases/production/policy").get_data(as_text=True)
    assert "State <strong>running</strong>, step 1 of 3: the candidate gets 5%" in html
    assert '<li class="current">5% (now)</li><li class="next">25%</li>' in html
