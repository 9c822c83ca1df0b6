"""/metrics carries the standard process and Python collectors, and speaks OpenMetrics when the
scraper asks for it (Prometheus sends `Accept: application/openmetrics-text;...`).

Both formats are checked with prometheus_client's own parsers (the text parser, and the strict
OpenMetrics parser, which refuses a body without `# EOF`, duplicate families and bad names),
and the classic format with `promtool check metrics` when promtool is installed (no pip
package ships it; Debian's `prometheus` does).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic

from tests.conftest import fit_linear, joblib_bytes
from tests.helpers import register

# What Prometheus 2.x/3.x sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,"
    "*/*;q=0.2"
)
STANDARD = {
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    "python_info",
    "python_gc_collections",
    "python_gc_objects_collected",
}


@pytest.fixture
def client(sqlite_client):
    assert register(sqlite_client, "price", joblib_bytes(fit_linear())).status_code == 201
    answer = sqlite_client.post("/models/price/1/predict", json={"instances": [[1, 2, 3]]})
    assert answer.status_code == 200
    return sqlite_client


def test_classic_text_has_the_standard_collectors(client):
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    families = {f.name: f for f in classic(answer.get_data(as_text=True))}
    assert families.keys() >= STANDARD
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["python_info"].samples[0].labels["implementation"] == "CPython"


def test_openmetrics_when_prometheus_asks_for_it(client):
    answer = client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
    assert answer.status_code == 200
    assert answer.mimetype == "application/openmetrics-text"
    assert "version=1.0.0" in answer.headers["Content-Type"]
    assert "Accept" in answer.headers["Vary"]
    text = answer.get_data(as_text=True)
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics(text)}
    assert families.keys() >= STANDARD
    requests_total = families["modelreg_http_requests"]
    assert requests_total.type == "counter"
    assert any(s.labels.get("model") == "price" and s.value >= 1 for s in requests_total.samples)


def promtool_findings(body: bytes) -> str:
    """What `promtool check metrics` says of a classic text exposition ("" when clean)."""
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    findings = (checked.stdout + checked.stderr).decode()
    return findings if checked.returncode or findings.strip() else ""


# promtool's `check metrics` reads only the classic text format; OpenMetrics is checked above
# with prometheus_client's strict parser.
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_finds_nothing_to_lint(client):
    assert promtool_findings(client.get("/metrics").get_data()) == ""
