"""The web UI in a real headless Chromium against a real `modelreg serve` (one gunicorn
worker, authentication on, SQLite; the server side runs on PostgreSQL too in
tests/api/test_ui.py).

Each page visited is checked for JavaScript console errors and unlabelled inputs, and saved
as a screenshot (build/ui/, not committed); the main pages are also checked for horizontal
scrolling at a phone's 375 px.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes, skops_bytes
from tests.e2e.browser import (
    OVERFLOW,
    UNLABELLED_INPUTS,
    console_errors,
    desktop_width,
    phone_width,
    screenshot,
    start_chromium,
)
from tests.e2e.servers import ServerProcess, modelreg_cli, wait_until

pytestmark = pytest.mark.slow


class Site:
    def __init__(self, server: ServerProcess, tokens: dict[str, str], env: dict[str, str]) -> None:
        self.server = server
        self.env = env
        self.url = server.url
        self.tokens = tokens
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {tokens['admin']}"
        self.registered = 0

    def model(self, name: str, versions: int, **metadata: Any) -> None:
        for index in range(versions):
            self.registered += 1
            meta = {"format": "skops", "metrics": {"rmse": 0.5 / (index + 1), "mae": 0.1}}
            meta.update(metadata)
            response = self.http.post(
                f"{self.url}/models/{name}/versions",
                files={
                    "artifact": ("m.skops", skops_bytes(fit_linear(offset=self.registered))),
                    "metadata": (None, json.dumps(meta)),
                },
                timeout=60,
            )
            assert response.status_code == 201, response.text

    def alias(self, name: str, alias: str) -> int | None:
        return self.http.get(f"{self.url}/models/{name}", timeout=10).json()["aliases"].get(alias)

    def promote(self, name: str, version: int, **body: Any) -> None:
        response = self.http.post(
            f"{self.url}/models/{name}/versions/{version}/promote",
            json={"alias": "production", **body},
            timeout=30,
        )
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("ui")
    env = {
        "DATABASE_URL": f"sqlite:///{folder / 'registry.db'}",
        "STORAGE_URL": (folder / "artifacts").as_uri(),
        "INSTANCE_PATH": str(folder / "instance"),
        "AUTH_DISABLED": "false",
        "ALIAS_REFRESH_SECONDS": "1",
        "MONITOR_FLUSH_SECONDS": "0.5",  # the monitoring page's window appears at once
    }
    assert "database at revision" in modelreg_cli("db", "upgrade", env=env)
    tokens = {
        role: modelreg_cli(
            "tokens", "create", "--name", f"{role}-1", "--role", role, env=env
        ).strip()
        for role in ("admin", "operator", "reader")
    }
    server = ServerProcess(env, folder, workers=1, name="ui")
    yield Site(server, tokens, env)
    server.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture
def browser(chromium) -> Iterator[Any]:
    chromium.delete_all_cookies()
    console_errors(chromium)  # start each test with an empty console
    yield chromium
    desktop_width(chromium)


def navigating(driver: Any, action: Any) -> None:
    """Do `action` (a click or a key that submits) and wait for the next page to load:
    selenium does not wait for a navigation that a key press starts."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    # A mark on the old document's window: the next document does not have it. (Waiting for
    # the old <html> element to go stale races Chromium's inspector mid-navigation, which
    # then answers "Node with given id does not belong to the document".)
    driver.execute_script("window.__modelregOldPage = true")
    action()

    def next_page_loaded(d: Any) -> bool:
        try:
            return bool(
                d.execute_script(
                    "return window.__modelregOldPage === undefined"
                    " && document.readyState === 'complete'"
                )
            )
        except WebDriverException:  # the script ran while the documents were swapping
            return False

    WebDriverWait(driver, 15).until(next_page_loaded)


def visit(driver: Any, url: str, shot: str | None = None) -> None:
    driver.get(url)
    check_page(driver, shot)


def check_page(driver: Any, shot: str | None = None, status: int | None = None) -> None:
    """What every page must pass: no console errors, every input labelled. A page answered
    with an error `status` on purpose logs that status, and nothing else."""
    errors = console_errors(driver)
    if status is not None:
        expected = f"the server responded with a status of {status}"
        errors = [e for e in errors if expected not in e]
    assert errors == []
    assert driver.execute_script(UNLABELLED_INPUTS) == []
    if shot:
        screenshot(driver, shot)


def sign_in(driver: Any, site: Site, role: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    visit(driver, f"{site.url}/ui/", "signin")
    assert "/ui/signin" in driver.current_url
    field = driver.switch_to.active_element  # autofocus: keyboard only from here
    assert field.get_attribute("id") == "token"
    navigating(driver, lambda: field.send_keys(site.tokens[role], Keys.ENTER))
    check_page(driver)
    assert driver.find_element(By.ID, "who").text.split(" ")[0] in (f"{role}-1", role)


def text_of(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def promote_in_page(driver: Any, version: int, reason: str, status: int | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    form = driver.find_element(By.ID, "promote-form")
    Select(form.find_element(By.ID, "promote-version")).select_by_value(str(version))
    form.find_element(By.ID, "promote-reason").send_keys(reason)
    navigating(driver, lambda: form.find_element(By.CSS_SELECTOR, "button[type=submit]").click())
    check_page(driver, status=status)


# ---- the tests -----------------------------------------------------------------------------


def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_ends_it(site, browser):
    from selenium.webdriver.common.by import By

    sign_in(browser, site, "reader")
    cookie = browser.get_cookie("modelreg_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie").find("modelreg_session") == -1
    navigating(browser, lambda: browser.find_element(By.CSS_SELECTOR, ".signout button").click())
    check_page(browser)
    assert "/ui/signin" in browser.current_url
    visit(browser, f"{site.url}/ui/")
    assert "/ui/signin" in browser.current_url
    replay = requests.get(  # the old cookie, replayed: ended on the server
        f"{site.url}/ui/", cookies={"modelreg_session": cookie["value"]}, allow_redirects=False
    )
    assert replay.status_code == 302 and "/ui/signin" in replay.headers["Location"]


def test_a_token_revoked_elsewhere_ends_its_browser_session_within_a_second(site, browser):
    from selenium.webdriver.common.by import By

    secret = modelreg_cli("tokens", "create", "--name", "brief", "--role", "reader", env=site.env)
    site.tokens["brief"] = secret.strip()
    sign_in(browser, site, "brief")
    # The command line changes the database only: the server hears of it through the epoch.
    modelreg_cli("tokens", "revoke", "brief", env=site.env)
    revoked = time.monotonic()

    def signed_out(driver: Any) -> bool:
        driver.get(f"{site.url}/ui/")
        return "/ui/signin" in driver.current_url

    wait_until(lambda: signed_out(browser), 3, interval=0.1, what="the session to end")
    assert time.monotonic() - revoked < 1.5  # the 1 s bound, with a page load of slack
    assert "signed out" in browser.find_element(By.TAG_NAME, "main").text


def test_browse_to_a_model_and_compare_two_versions(site, browser):
    from selenium.webdriver.common.by import By

    site.model("browse", 2, tags={"team": "pricing"}, params={"alpha": 0.5})
    sign_in(browser, site, "reader")
    visit(browser, f"{site.url}/ui/?q=brow", "models")
    navigating(browser, lambda: browser.find_element(By.LINK_TEXT, "browse").click())
    check_page(browser, "model")
    assert browser.find_elements(By.ID, "promote-form") == []  # a reader: no promote button
    for number in (1, 2):
        browser.find_element(By.ID, f"cmp-{number}").click()
    navigating(
        browser,
        lambda: browser.find_element(By.CSS_SELECTOR, "#compare-form button[type=submit]").click(),
    )
    check_page(browser, "compare")
    rmse = browser.find_element(By.CSS_SELECTOR, 'tr[data-section="metrics"][data-key="rmse"]')
    mae = browser.find_element(By.CSS_SELECTOR, 'tr[data-section="metrics"][data-key="mae"]')
    assert rmse.get_attribute("class") == "differs"
    assert mae.get_attribute("class") == "same"
    cells = [float(c.text) for c in rmse.find_elements(By.TAG_NAME, "td")[2:]]
    assert cells == pytest.approx([0.5, 0.25], rel=1e-6)
    background = rmse.find_element(By.TAG_NAME, "td").value_of_css_property("background-color")
    assert background != mae.find_element(By.TAG_NAME, "td").value_of_css_property(
        "background-color"
    )  # highlighted, not only marked
    navigating(browser, lambda: browser.find_element(By.LINK_TEXT, "v2").click())
    check_page(browser, "version")
    assert "skops" in text_of(browser, "record")


def test_promote_with_a_reason_shows_the_alias_and_the_event(site, browser):
    from selenium.webdriver.common.by import By

    site.model("promo", 2)
    sign_in(browser, site, "operator")
    visit(browser, f"{site.url}/ui/models/promo")
    promote_in_page(browser, 2, "better rmse on the holdout")
    assert text_of(browser, "done") == "production now points at version 2"
    assert "production → v2" in text_of(browser, "aliases")
    first_event = browser.find_element(By.CSS_SELECTOR, "#events tbody tr").text
    assert "promote" in first_event and "better rmse on the holdout" in first_event
    assert "operator-1" in first_event
    assert site.alias("promo", "production") == 2


def test_a_stale_pages_promote_is_refused_with_a_clear_message(site, browser):
    site.model("stale", 2)
    site.promote("stale", 1)
    sign_in(browser, site, "operator")
    visit(browser, f"{site.url}/ui/models/stale")  # shows production at v1
    site.promote("stale", 2, expected_version=1)  # someone else moves it meanwhile
    promote_in_page(browser, 1, "back to one", status=409)
    message = text_of(browser, "problem")
    assert "this page was out of date" in message
    assert "alias 'production' of 'stale' is at version 2, expected version 1" in message
    screenshot(browser, "stale-promote")
    assert site.alias("stale", "production") == 2


def test_rollback_with_a_confirmation(site, browser):
    from selenium.webdriver.common.by import By

    site.model("roll", 2)
    site.promote("roll", 1)
    site.promote("roll", 2)
    sign_in(browser, site, "operator")
    visit(browser, f"{site.url}/ui/models/roll")
    navigating(browser, lambda: browser.find_element(By.LINK_TEXT, "Roll back production…").click())
    check_page(browser, "rollback")
    assert "version 2" in text_of(browser, "rollback-what")
    assert site.alias("roll", "production") == 2  # asked, not done
    browser.find_element(By.ID, "rollback-reason").send_keys("latency regression")
    navigating(
        browser,
        lambda: browser.find_element(By.CSS_SELECTOR, "#rollback-form button[type=submit]").click(),
    )
    check_page(browser)
    assert text_of(browser, "done") == "production rolled back to version 1"
    assert site.alias("roll", "production") == 1


def test_a_reader_sees_no_promote_button_and_forged_posts_are_refused(site, browser):
    from selenium.webdriver.common.by import By

    site.model("guarded", 1)
    sign_in(browser, site, "reader")
    visit(browser, f"{site.url}/ui/models/guarded")
    assert browser.find_elements(By.ID, "promote-form") == []
    assert browser.find_elements(By.PARTIAL_LINK_TEXT, "Roll back") == []
    csrf = browser.find_element(By.CSS_SELECTOR, "input[name=csrf_token]").get_attribute("value")
    cookies = {"modelreg_session": browser.get_cookie("modelreg_session")["value"]}
    form = {"version": "1", "alias": "production", "reason": "forged"}
    target = f"{site.url}/ui/models/guarded/promote"
    forged = requests.post(target, data={**form, "csrf_token": csrf}, cookies=cookies)
    assert forged.status_code == 403 and "operator role" in forged.text
    # An operator's session, but a POST without the CSRF token (a cross-site form's shape).
    operator = requests.Session()
    page = operator.get(f"{site.url}/ui/signin")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    operator.post(
        f"{site.url}/ui/signin", data={"token": site.tokens["operator"], "csrf_token": token}
    )
    assert operator.get(f"{site.url}/ui/", allow_redirects=False).status_code == 200
    assert operator.post(target, data=form).status_code == 403
    assert site.alias("guarded", "production") is None


def test_which_version_was_production_on_a_day(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    site.model("history", 1)
    site.promote("history", 1)
    sign_in(browser, site, "reader")
    visit(browser, f"{site.url}/ui/models/history")
    page = browser.find_element(By.TAG_NAME, "html")
    today = browser.execute_script("return new Date().toISOString().slice(0, 10)")
    day = browser.find_element(By.ID, "on")
    browser.execute_script("arguments[0].value = arguments[1]", day, today)
    browser.find_element(By.CSS_SELECTOR, "#on-day button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.ID, "on-answer"))
    check_page(browser, "history")
    assert "production was version 1" in text_of(browser, "on-answer")
    assert page.is_displayed()  # htmx swapped the answer in: the same page, no reload
    assert f"on={today}" in browser.current_url  # and the question is in the address bar


def test_the_processes_page(site, browser):
    sign_in(browser, site, "reader")
    visit(browser, f"{site.url}/ui/processes", "processes")
    assert "ok" in text_of(browser, "readiness")


def test_monitoring_chart_and_policy_pages(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.api.test_monitoring_api import FEATURES, _csv, _data, _fit

    model, X, y = _fit()
    response = site.http.post(
        f"{site.url}/models/house/versions",
        files={
            "artifact": ("m.joblib", joblib_bytes(model)),
            "metadata": (None, json.dumps({"format": "joblib", "target": "price"})),
            "reference": ("reference.csv", _csv(X, y)),
        },
        timeout=60,
    )
    assert response.status_code == 201, response.text
    rows = _data(np.random.default_rng(2), 300, shift=1.0)[0]
    body = {"inputs": {c: rows[c].tolist() for c in FEATURES}}
    assert site.http.post(f"{site.url}/models/house/1/predict", json=body).status_code == 200
    report = f"{site.url}/models/house/versions/1/monitoring"
    wait_until(lambda: site.http.get(report).json()["windows"], 15, what="a flushed window")
    sign_in(browser, site, "reader")
    visit(browser, f"{site.url}/ui/models/house/versions/1/monitoring")
    WebDriverWait(browser, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#chart .uplot canvas")
    )
    check_page(browser, "monitoring")  # uPlot drew without a console error (CSP included)
    legend = browser.find_element(By.ID, "chart").text
    assert all(feature in legend for feature in FEATURES)
    site.promote("house", 1)
    visit(browser, f"{site.url}/ui/models/house/aliases/production/policy", "policy")
    assert "No policy" in text_of(browser, "policy-state")


@pytest.fixture(scope="module")
def long_strings(site) -> str:
    """A model whose description and tags are long unbroken strings, the usual overflow."""
    site.model(
        "layout",
        2,
        description="a long description " * 20,
        tags={"a-rather-long-tag-name": "with-a-long-value-" * 4},
        params={"an_unbroken_parameter_value": "x" * 120},
    )
    return "layout"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/",
        "/ui/models/layout",
        "/ui/models/layout/versions/1",
        "/ui/models/layout/compare?v=1&v=2",
        "/ui/processes",
    ],
)
def test_no_horizontal_scroll_on_a_phone(site, browser, long_strings, path):
    sign_in(browser, site, "operator")
    phone_width(browser)
    visit(browser, f"{site.url}{path}")
    assert browser.execute_script(OVERFLOW) <= 0, path
    screenshot(browser, "phone-" + path.strip("/").replace("/", "-").replace("?", "-"))
