"""A predict body just under the size limit but far over the row limit, through a real server:
refused before it is parsed, with the worker's peak memory a small multiple of the body.

8 million one-value rows (`{"inputs": [[1],[2],...]}`, 63 MiB) once became 8 million Python
lists, ~1.5 GiB, before the row limit was even checked; a few such requests at once could
exhaust the host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess

pytestmark = pytest.mark.slow

BODY_BYTES = 63 * 1024 * 1024
MAX_GROWTH = 4  # peak memory may grow by at most this many times the body


def _padded(head: bytes, item: bytes, tail: bytes) -> bytes:
    """head + item, item, ... + tail, as close to BODY_BYTES as whole items allow."""
    count = (BODY_BYTES - len(head) - len(tail)) // (len(item) + 1)
    return head + b",".join([item] * count) + tail


def _v2(item: bytes) -> bytes:
    """One [N, 1] tensor whose data is N items (nested rows or flat values)."""
    head = b'{"inputs": [{"name": "input", "datatype": "FP64", "shape": [%d, 1], "data": ['
    tail = b"]}]}"
    count = (BODY_BYTES - len(head % 10**8) - len(tail)) // (len(item) + 1)
    return (head % count) + b",".join([item] * count) + tail


PREDICT, INFER = "/models/one/1/predict", "/v2/models/one/versions/1/infer"
# Built when a test runs, not at collection: each is 63 MiB.
BODIES = {
    "inputs rows": (PREDICT, lambda: _padded(b'{"inputs": [', b"[1234567]", b"]}")),
    "instances rows": (PREDICT, lambda: _padded(b'{"instances": [', b"[1.5]", b"]}")),
    "instances flat": (PREDICT, lambda: _padded(b'{"instances": [', b"1", b"]}")),
    "dataframe_records": (PREDICT, lambda: _padded(b'{"dataframe_records": [', b'{"x":1}', b"]}")),
    "dataframe_split": (
        PREDICT,
        lambda: _padded(b'{"dataframe_split": {"columns": ["x"], "data": [', b"[1]", b"]}}"),
    ),
    "columns": (PREDICT, lambda: _padded(b'{"inputs": {"x": [', b"1", b"]}}")),
    "v2 nested": (INFER, lambda: _v2(b"[1]")),
    "v2 flat": (INFER, lambda: _v2(b"1")),
}


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


SMALL = {
    PREDICT: {"inputs": [[1.0], [2.0]]},
    INFER: {"inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 1], "data": [1, 2]}]},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A one-worker server with a warm model, and the worker's peak memory before any large
    body: every test is measured against it, so no body may raise the peak much above it."""
    tmp_path = tmp_path_factory.mktemp("memory")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "true",
        "ACCELERATE": "off",
        "LOG_LEVEL": "WARNING",
    }
    process = ServerProcess(env, tmp_path, workers=1, threads=2, name="memory")
    import pandas as pd

    model = fit_linear(1)
    model.fit(pd.DataFrame({"x": [0.0, 1.0, 2.0]}), [0.0, 1.0, 2.0])  # feature name "x"
    registered = requests.post(
        f"{process.url}/models/one/versions",
        files={
            "artifact": ("m.joblib", joblib_bytes(model)),
            "metadata": (None, json.dumps({"format": "joblib"})),
        },
        timeout=60,
    )
    assert registered.status_code == 201, registered.text
    for path, body in SMALL.items():  # every code path of a small request has run once
        assert requests.post(f"{process.url}{path}", json=body, timeout=30).status_code == 200
    worker = requests.get(f"{process.url}/serving/cache", timeout=30).json()["pid"]
    yield process, worker, _peak_rss_kib(worker)
    process.stop()


@pytest.mark.parametrize("form", list(BODIES))
def test_a_body_far_over_the_row_limit_is_refused_with_bounded_memory(server, form):
    process, worker, baseline = server
    path, build = BODIES[form]
    body = build()
    assert BODY_BYTES - 64 < len(body) <= BODY_BYTES

    response = requests.post(
        f"{process.url}{path}",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=300,
    )

    growth = (_peak_rss_kib(worker) - baseline) * 1024
    if path.startswith("/v2/"):  # the Open Inference Protocol's own error shape, input: 400
        assert response.status_code == 400, response.text[:300]
        detail = response.json()["error"]
    else:
        assert response.status_code == 422, response.text[:300]
        assert response.headers["Content-Type"] == "application/problem+json"
        detail = response.json()["detail"]
    assert "too many" in detail and "the limit is 100000 rows" in detail, detail
    print(
        f"{form}: peak memory {growth / 2**20:.0f} MiB above the warm worker's, "
        f"for a {len(body) / 2**20:.0f} MiB body"
    )
    assert growth <= MAX_GROWTH * len(body), f"{growth / 2**20:.0f} MiB"
