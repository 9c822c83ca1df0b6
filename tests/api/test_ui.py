"""The web UI's server side through Flask's test client: sessions, CSRF, roles, scope and
escaping. On SQLite and PostgreSQL, with authentication on."""

from __future__ import annotations

import time
from typing import Any

import pytest

from registry import auth
from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.helpers import register
from tests.ui_helpers import page_csrf, sign_in


class World:
    def __init__(self, app) -> None:
        self.app = app
        self.uow = app.extensions["modelreg"].uow
        self.secrets: dict[str, str] = {}
        self.models = 0
        self.token("root", "admin")

    def token(self, name: str, role: str, **kwargs: Any) -> str:
        self.secrets[name], _ = auth.create_token(
            self.uow, name=name, role=role, actor="test", **kwargs
        )
        return self.secrets[name]

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.secrets['root']}"}
        return self.app.test_client().open(path, method=method, headers=headers, **kwargs)

    def version(self, name: str, metadata: dict[str, Any] | None = None) -> None:
        self.models += 1  # distinct bytes each time: distinct sha256
        artifact = joblib_bytes(fit_linear(offset=self.models))
        headers = {"Authorization": f"Bearer {self.secrets['root']}"}
        response = register(self.app.test_client(), name, artifact, metadata, headers=headers)
        assert response.status_code == 201, response.get_data(as_text=True)

    def browser(self, token: str) -> Any:
        client = self.app.test_client()
        response = sign_in(client, self.secrets[token])
        assert response.status_code == 303, response.get_data(as_text=True)
        return client

    def alias(self, name: str, alias: str) -> int | None:
        return self.api("GET", f"/models/{name}").get_json()["aliases"].get(alias)

    def events(self, name: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/models/{name}/events").get_json()["events"]


@pytest.fixture
def world(tmp_path, database_url):
    from manage import create_app

    app = create_app(make_config(tmp_path, database_url, AUTH_DISABLED=False))
    yield World(app)
    app.extensions["modelreg"].engine.dispose()


def _cookie_header(response: Any) -> str:
    return next(
        v for k, v in response.headers.items() if k == "Set-Cookie" and "modelreg_session" in v
    )


# ---- sessions ------------------------------------------------------------------------------


def test_sign_in_sets_a_strict_httponly_session_cookie(world):
    response = sign_in(world.app.test_client(), world.secrets["root"])
    assert response.status_code == 303
    cookie = _cookie_header(response)
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Max-Age=" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    assert world.secrets["root"] not in cookie  # the token never goes into the cookie


def test_the_cookie_is_secure_behind_an_https_proxy(world):
    response = sign_in(
        world.app.test_client(), world.secrets["root"], **{"X-Forwarded-Proto": "https"}
    )
    assert "Secure" in _cookie_header(response)


def test_a_wrong_token_opens_no_session(world):
    client = world.app.test_client()
    response = sign_in(client, "mr_not-a-token")
    assert response.status_code == 401
    assert "not valid" in response.get_data(as_text=True)
    assert "modelreg_session" not in response.headers.get("Set-Cookie", "")
    assert client.get("/ui/").status_code == 302


def test_a_sign_in_post_without_its_form_token_is_refused(world):
    client = world.app.test_client()
    client.get("/ui/signin")
    response = client.post("/ui/signin", data={"token": world.secrets["root"]})
    assert response.status_code == 403
    assert client.get("/ui/").status_code == 302  # still signed out


def test_pages_need_a_session_and_send_the_browser_to_sign_in(world):
    response = world.app.test_client().get("/ui/models/m")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/ui/signin?next=/ui/models/m")


def test_sign_out_ends_the_session_on_the_server(world):
    client = world.browser("root")
    cookie = client.get_cookie("modelreg_session").value
    csrf = page_csrf(client, "/ui/")
    assert client.post("/ui/signout", data={"csrf_token": csrf}).status_code == 303
    replay = world.app.test_client()
    replay.set_cookie("modelreg_session", cookie)  # a copy of the old cookie is worthless
    assert replay.get("/ui/").status_code == 302


def test_a_revoked_token_ends_its_sessions_within_a_second(world):
    world.token("ops", "operator")
    client = world.browser("ops")
    assert client.get("/ui/").status_code == 200
    auth.revoke_token(world.uow, "ops")  # as another process would: only the epoch moves
    deadline = time.monotonic() + 1.5
    while client.get("/ui/").status_code == 200:
        assert time.monotonic() < deadline, "the session outlived its revoked token"
        time.sleep(0.1)
    assert client.get("/ui/").headers["Location"].startswith("/ui/signin")


# ---- CSRF, roles and scope -------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(world):
    world.version("m")
    client = world.browser("root")
    response = client.post(
        "/ui/models/m/promote", data={"version": "1", "alias": "production", "reason": "x"}
    )
    assert response.status_code == 403
    assert "CSRF" in response.get_data(as_text=True)
    assert world.alias("m", "production") is None


def test_a_cross_site_post_is_refused_even_with_the_token(world):
    world.version("m")
    client = world.browser("root")
    csrf = page_csrf(client, "/ui/models/m")
    response = client.post(
        "/ui/models/m/promote",
        data={"version": "1", "alias": "production", "reason": "x", "csrf_token": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert world.alias("m", "production") is None


def test_a_reader_sees_no_promote_button_and_a_forged_post_is_refused(world):
    world.version("m")
    world.token("viewer", "reader")
    client = world.browser("viewer")
    html = client.get("/ui/models/m").get_data(as_text=True)
    assert 'id="promote-form"' not in html
    assert "Roll back" not in html
    csrf = page_csrf(client, "/ui/models/m")
    response = client.post(
        "/ui/models/m/promote",
        data={"version": "1", "alias": "production", "reason": "x", "csrf_token": csrf},
    )
    assert response.status_code == 403
    assert "operator role" in response.get_data(as_text=True)
    assert world.alias("m", "production") is None


def test_a_model_scoped_token_sees_only_its_models(world):
    world.version("mine")
    world.version("theirs")
    world.token("scoped", "operator", models=["mine"])
    client = world.browser("scoped")
    listing = client.get("/ui/").get_data(as_text=True)
    assert "/ui/models/mine" in listing
    assert "theirs" not in listing
    assert client.get("/ui/models/theirs").status_code == 403
    assert client.get("/ui/models/theirs/versions/1").status_code == 403
    assert client.get("/ui/models/theirs/versions/1/artifact").status_code == 403


def test_user_strings_render_inert(world):
    attack = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    world.api("POST", "/models", json={"name": "m", "description": attack, "tags": {"t": attack}})
    world.version("m", {"description": attack, "tags": {"k": attack}})
    client = world.browser("root")
    for path in ("/ui/", "/ui/models/m", "/ui/models/m/versions/1"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
        assert "script-src 'self'" in client.get(path).headers["Content-Security-Policy"]


# ---- promote, compare, history, rollback ---------------------------------------------------


def _promote(client: Any, csrf: str, version: int, reason: str, **seen: str) -> Any:
    data = {"version": str(version), "alias": "production", "reason": reason, "csrf_token": csrf}
    data.update({f"seen_{k}": v for k, v in seen.items()})
    return client.post("/ui/models/m/promote", data=data)


def test_promote_is_a_compare_and_set_against_what_the_page_showed(world):
    world.version("m")
    world.version("m")
    client = world.browser("root")
    csrf = page_csrf(client, "/ui/models/m")
    done = _promote(client, csrf, 1, "first release")
    assert done.status_code == 303
    assert world.alias("m", "production") == 1
    page = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "production now points at version 1" in page
    assert "first release" in page  # the audit trail and the timeline
    # A page shown before that promotion (production absent) is out of date now.
    stale = _promote(client, csrf, 2, "from a stale page")
    assert stale.status_code == 409
    assert "this page was out of date" in stale.get_data(as_text=True)
    assert world.alias("m", "production") == 1
    fresh = _promote(client, csrf, 2, "second", production="1")
    assert fresh.status_code == 303
    assert world.alias("m", "production") == 2
    assert [e["type"] for e in world.events("m")][:2] == ["promote", "promote"]


def test_promote_without_a_reason_names_the_field(world):
    world.version("m")
    client = world.browser("root")
    response = _promote(client, page_csrf(client, "/ui/models/m"), 1, "")
    assert response.status_code == 422
    assert "reason" in response.get_data(as_text=True)
    assert world.alias("m", "production") is None


def test_rollback_asks_first_then_moves_the_alias_back(world):
    world.version("m")
    world.version("m")
    client = world.browser("root")
    csrf = page_csrf(client, "/ui/models/m")
    _promote(client, csrf, 1, "one")
    _promote(client, csrf, 2, "two", production="1")
    confirm = client.get("/ui/models/m/aliases/production/rollback").get_data(as_text=True)
    assert "version 2" in confirm and "version 1" in confirm
    assert world.alias("m", "production") == 2  # asking changed nothing
    data = {"reason": "bad latency", "seen": "2", "csrf_token": csrf}
    response = client.post("/ui/models/m/aliases/production/rollback", data=data)
    assert response.status_code == 303
    assert world.alias("m", "production") == 1
    assert world.events("m")[0]["type"] == "rollback"
    again = client.post("/ui/models/m/aliases/production/rollback", data=data)
    assert again.status_code == 409  # the confirmation page showed version 2
    assert "not rolled back" in again.get_data(as_text=True)
    assert world.alias("m", "production") == 1


def test_a_stale_rollback_confirmation_is_refused_by_compare_and_set(world):
    for _ in range(3):
        world.version("m")
    client = world.browser("root")
    csrf = page_csrf(client, "/ui/models/m")
    _promote(client, csrf, 1, "one")
    _promote(client, csrf, 2, "two", production="1")
    confirm = client.get("/ui/models/m/aliases/production/rollback").get_data(as_text=True)
    assert "moves it to <strong>version 1</strong>" in confirm
    moved = world.api("POST", "/models/m/versions/3/promote", json={"reason": "meanwhile"})
    assert moved.status_code == 200  # someone else, after the page was shown
    data = {"reason": "undo two", "seen": "2", "csrf_token": csrf}
    refused = client.post("/ui/models/m/aliases/production/rollback", data=data)
    assert refused.status_code == 409
    text = refused.get_data(as_text=True)
    assert "is at version 3, expected version 2; not rolled back" in text
    assert world.alias("m", "production") == 3
    assert world.events("m")[0]["reason"] == "meanwhile"  # nothing recorded


def test_compare_marks_the_rows_that_differ(world):
    world.version("m", {"metrics": {"rmse": 0.5, "mae": 0.1}, "params": {"alpha": 1}})
    world.version("m", {"metrics": {"rmse": 0.25, "mae": 0.1}, "params": {"alpha": 1}})
    client = world.browser("root")
    html = client.get("/ui/models/m/compare?v=1&v=2").get_data(as_text=True)
    assert 'class="differs" data-section="metrics" data-key="rmse"' in html
    assert 'class="same" data-section="metrics" data-key="mae"' in html
    assert 'class="same" data-section="params" data-key="alpha"' in html
    one = client.get("/ui/models/m/compare?v=1")
    assert one.status_code == 422 and "between 2 and" in one.get_data(as_text=True)


def test_which_version_was_production_on_a_day(world):
    world.version("m")
    client = world.browser("root")
    _promote(client, page_csrf(client, "/ui/models/m"), 1, "go")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    html = client.get(f"/ui/models/m?alias=production&on={today}").get_data(as_text=True)
    assert "<strong>version 1</strong>" in html
    before = client.get("/ui/models/m?alias=production&on=2001-01-01").get_data(as_text=True)
    assert "production was\n  not set" in before
    bad = client.get("/ui/models/m?on=yesterday")
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.get_data(as_text=True)


def test_the_version_page_downloads_the_artifact(world):
    world.version("m")
    client = world.browser("root")
    html = client.get("/ui/models/m/versions/1").get_data(as_text=True)
    assert 'id="download"' in html
    download = client.get("/ui/models/m/versions/1/artifact")
    assert download.status_code == 200
    expected = world.api("GET", "/models/m/versions/1/artifact").get_data()
    assert download.get_data() == expected


def test_the_processes_page_shows_readiness_and_the_cache(world):
    world.version("m")
    world.api("POST", "/models/m/1/predict", json={"instances": [[0.1, 0.2, 0.3]]})
    html = world.browser("root").get("/ui/processes").get_data(as_text=True)
    assert 'class="status-ok">ok' in html
    assert "<td>m</td><td>1</td>" in html


# ---- the root ------------------------------------------------------------------------------


def test_the_root_sends_a_browser_to_the_ui_and_keeps_the_api_answer(world):
    client = world.app.test_client()
    browser = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.status_code == 302 and browser.headers["Location"] == "/ui/"
    api = client.get("/", headers={"Accept": "application/json"})
    assert api.status_code == 404
    assert api.headers["Content-Type"].startswith("application/problem+json")
    assert client.get("/").status_code == 404  # no Accept: an API client


def test_the_models_list_searches_and_pages(world):
    for name in ("alpha", "beta", "gamma"):
        world.api("POST", "/models", json={"name": name, "tags": {"team": name[0]}})
    client = world.browser("root")
    first = client.get("/ui/?limit=2").get_data(as_text=True)
    assert "/ui/models/alpha" in first and "/ui/models/beta" in first
    assert "/ui/models/gamma" not in first
    link = first.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    second = client.get("/ui/" + link).get_data(as_text=True)
    assert "/ui/models/gamma" in second and "/ui/models/alpha" not in second
    found = client.get("/ui/?q=amm").get_data(as_text=True)
    assert "/ui/models/gamma" in found and "/ui/models/beta" not in found
    tagged = client.get("/ui/?tag=team:b").get_data(as_text=True)
    assert "/ui/models/beta" in tagged and "/ui/models/alpha" not in tagged
    assert client.get("/ui/?limit=lots").status_code == 422
    assert client.get("/ui/?cursor=bogus").status_code == 422


def test_an_error_is_a_page_for_a_browser_and_problem_json_for_other_clients(world):
    client = world.browser("root")
    html = client.get("/ui/models/nope", headers={"Accept": "text/html,*/*;q=0.8"})
    assert html.status_code == 404 and html.mimetype == "text/html"
    assert "model &#39;nope&#39; not found" in html.get_data(as_text=True)
    api = client.get("/ui/models/nope")
    assert api.status_code == 404
    assert api.headers["Content-Type"].startswith("application/problem+json")
    assert api.get_json()["detail"] == "model 'nope' not found"
