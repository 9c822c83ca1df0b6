"""Headless Chromium for the UI's browser tests: Debian's chromium and chromedriver, named
explicitly, with Selenium Manager kept offline (nothing is downloaded at run time).

Outside CI a missing browser skips the tests with a warning; under CI=true it fails them,
like the PostgreSQL rule in tests/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(
    os.environ.get("UI_SCREENSHOTS_DIR", Path(__file__).resolve().parents[2] / "build" / "ui")
)

# Every input a person fills in has a name a screen reader can say: a <label for>, a wrapping
# <label>, aria-label or aria-labelledby. Returns the ones that do not.
UNLABELLED_INPUTS = """
return Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(e => !['hidden', 'submit', 'button'].includes(e.type))
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !e.getAttribute('aria-labelledby'))
  .map(e => e.outerHTML);
"""
# How far the page is wider than the viewport (0: no horizontal scroll).
OVERFLOW = (
    "return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
    " - window.innerWidth;"
)


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"browser tests need Chromium under CI: {reason}")
    pytest.skip(
        f"warning: no headless Chromium here ({reason}); apt-get install chromium chromium-driver"
    )


def start_chromium() -> Any:
    """A headless Chromium driven by selenium, or a skip (a failure under CI)."""
    os.environ["SE_OFFLINE"] = "1"  # Selenium Manager must never fetch a browser or driver
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        _missing(f"selenium is not installed: {error}")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            _missing(f"{path} not found")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # runs as root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def console_errors(driver: Any) -> list[str]:
    """Severe console messages since the last call (the log is drained on read)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def phone_width(driver: Any, width: int = 375) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 800, "deviceScaleFactor": 2, "mobile": True},
    )


def desktop_width(driver: Any) -> None:
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
