"""`modelreg serve` (the development server) started the documented way: its port from
MODELREG_PORT, and one JSON access-log line per request, with no terminal colour codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.servers import free_port, wait_until

pytestmark = pytest.mark.slow


def test_one_plain_json_line_per_request_on_the_port_from_the_environment(tmp_path) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "MODELREG_PORT": str(port), "LOG_LEVEL": "INFO", "LOG_FORMAT": "json",
           "AUTH_DISABLED": "true", "MODELREG_HOME": str(tmp_path / "home")}  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from manage import cli; cli()", "serve"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return requests.get(f"{url}/healthz", timeout=1).status_code == 200
                except requests.RequestException:
                    return False

            wait_until(up, timeout=60, interval=0.1, what="the server")
            assert requests.get(f"{url}/models/nothing-here", timeout=5).status_code == 404
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
    text = log_path.read_text()
    assert "\x1b[" not in text and "\\u001b" not in text
    json_lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert json_lines, text
    about_the_404 = [line for line in text.splitlines() if "/models/nothing-here" in line]
    assert len(about_the_404) == 1, text  # the access log only; werkzeug's copy is silenced
    assert json.loads(about_the_404[0])["status"] == 404
