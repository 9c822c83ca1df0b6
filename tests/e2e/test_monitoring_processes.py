"""Two real server processes (gunicorn, fast path and Flask) fold their traffic into window
summaries; merged through the database they hold exactly the rows of every request sent,
bin by bin, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from registry.monitoring import store
from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import start_servers, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], ids=str)
def database_env(request, tmp_path) -> dict[str, str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    return {
        "DATABASE_URL": url,
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "AUTH_DISABLED": "true",
        "MONITOR_FLUSH_SECONDS": "0.5",
        "MONITOR_WINDOW_SECONDS": "3600",
        "MONITOR_PAYLOAD_SAMPLE": "0",
    }


def test_two_processes_merge_to_exactly_the_rows_sent(database_env, tmp_path):
    model = fit_linear(n_features=3)
    rng = np.random.default_rng(0)
    reference = rng.random((300, 3))
    csv = "f0,f1,f2\n" + "\n".join(",".join(repr(v) for v in row) for row in reference.tolist())
    first, second = start_servers(
        database_env, tmp_path, [{"workers": 1, "name": "a"}, {"workers": 1, "name": "b"}]
    )
    try:
        registered = requests.post(
            f"{first.url}/models/price/versions",
            files={
                "artifact": ("m.joblib", joblib_bytes(model)),
                "metadata": (None, json.dumps({"format": "joblib"})),
                "reference": ("reference.csv", csv.encode(), "text/csv"),
            },
            timeout=60,
        )
        assert registered.status_code == 201, registered.text
        assert registered.json()["reference"]["profiled"] is True, registered.json()["reference"]
        sent = []
        for i, size in enumerate([1, 1, 3, 50, 1, 7, 1200, 2, 1, 40] * 3):
            rows = rng.random((size, 3)) * 1.2 - 0.1  # some rows outside the reference range
            server = (first, second)[i % 2]
            answer = requests.post(
                f"{server.url}/models/price/1/predict",
                json={"instances": rows.tolist()},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            sent.append(rows)
        refused = requests.post(
            f"{second.url}/models/price/1/predict", json={"instances": [[1, "x", 2]]}, timeout=30
        )
        assert refused.status_code == 422
        total = sum(len(rows) for rows in sent)

        engine = create_engine(database_env["DATABASE_URL"])
        sessions = sessionmaker(bind=engine)

        def merged():
            with sessions() as session:
                windows = store.merged_windows(session, "price", 1, since=0)
            return windows

        def complete() -> bool:
            windows = merged()
            return sum(s["rows"] for s in windows.values()) == total and any(
                s["refused"] for s in windows.values()
            )

        wait_until(complete, timeout=20, interval=0.2, what="both processes to flush")
        windows = merged()
        (summary,) = windows.values()  # one window, both processes
        assert summary["rows"] == total
        assert summary["refused"] == {"instances[1]": 1}
        # Large requests are sampled systematically for the bins (every k-th row).
        limit = 256  # MONITOR_ROWS_BINNED_PER_REQUEST
        binned = [rows if len(rows) <= limit else rows[:: -(-len(rows) // limit)] for rows in sent]
        X = np.concatenate(binned)
        assert summary["binned"] == len(X)
        profile = store.profiles(sessions, [("price", 1)])[("price", 1)][1]
        for j, feature in enumerate(profile["features"]):
            edges = np.asarray(feature["edges"])
            expected = np.bincount(
                np.searchsorted(edges, X[:, j], side="right"), minlength=edges.size + 1
            )
            got = summary["features"][feature["name"]]
            assert got["counts"] == expected.tolist()
            assert got["below"] == int((X[:, j] < feature["min"]).sum())
            assert got["above"] == int((X[:, j] > feature["max"]).sum())
        writers = {row for row in _writers(sessions)}
        assert len(writers) == 2  # both processes wrote
        engine.dispose()
    finally:
        first.stop()
        second.stop()


def _writers(sessions) -> list[str]:
    from sqlalchemy import select

    from registry.monitoring.tables import MonitorSummary

    with sessions() as session:
        return list(session.scalars(select(MonitorSummary.writer).distinct()))
