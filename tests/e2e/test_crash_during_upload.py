"""kill -9 of the whole server while an artifact upload is in flight.

A real gunicorn server is SIGKILLed (arbiter and worker, no cleanup of any kind) while:

- the multipart body is still arriving and being staged (local store, SQLite);
- the staged artifact is being sent to S3 as a multipart upload (S3 store, PostgreSQL: the
  production shape), through a throttling proxy so that the upload is still in progress when
  the server dies. (A kill while staging for S3 is the local case again: nothing reaches S3
  before the body is complete, and the staging folder is a local folder.)

After a restart on the same database and store: no version row, no visible blob, at most the
abandoned staged `.part` file; `modelreg storage gc` removes the staged file once it is older
than the staging expiry (never while it could still be an upload in progress) and the orphan
blobs, and never a blob that a version references.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests

from registry.services.storage_gc import STAGING_EXPIRY
from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import (
    ServerProcess,
    StoreView,
    ThrottledProxy,
    env_strings,
    modelreg_cli,
    referenced_digests,
    wait_until,
)

pytestmark = pytest.mark.slow

MB = 1024 * 1024
DECLARED_ARTIFACT = 50 * MB  # what the interrupted request announces
STAGED_BEFORE_KILL = 4 * MB  # how much of it the server has staged when it dies
CHUNK = 256 * 1024

CASES = [
    pytest.param(("sqlite", "local", "staging"), id="local-staging"),
    pytest.param(
        ("postgresql", "s3", "multipart"), id="s3-multipart-upload", marks=pytest.mark.postgres
    ),
]


@pytest.fixture(params=CASES)
def case(request, tmp_path):
    """(env for the server, a view of its store, the throttling proxy or None, the phase)."""
    database, storage, phase = request.param
    env = {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "true",
        "DATABASE_URL": (
            f"sqlite:///{tmp_path / 'registry.db'}"
            if database == "sqlite"
            else request.getfixturevalue("postgres_url")
        ),
    }
    proxy = None
    if storage == "local":
        env["STORAGE_URL"] = (tmp_path / "artifacts").as_uri()
        view = StoreView(env)
    else:
        seaweedfs = request.getfixturevalue("seaweedfs")
        env["STORAGE_URL"] = request.getfixturevalue("s3_url")
        env.update(env_strings(request.getfixturevalue("s3_config_overrides")))
        if phase == "multipart":
            proxy = ThrottledProxy("127.0.0.1", seaweedfs.ports["s3.port"])
            env["S3_ENDPOINT_URL"] = proxy.url
        view = StoreView(env, seaweedfs.client())
    yield env, view, proxy, phase
    if proxy is not None:
        proxy.close()
    for upload in view.multipart_uploads():  # leave the shared bucket clean
        view.client.abort_multipart_upload(
            Bucket=view.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )


def _register(url: str, name: str, artifact: bytes) -> dict:
    response = requests.post(
        f"{url}/models/{name}/versions",
        files={
            "artifact": ("m.joblib", artifact),
            "metadata": (None, json.dumps({"format": "joblib"})),
        },
        timeout=120,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _big_model_bytes(size: int) -> bytes:
    """A valid joblib model of about SIZE bytes: a fitted regression carrying random ballast."""
    model = fit_linear(seed=7)
    model.ballast_ = np.frombuffer(os.urandom(size), dtype=np.uint8)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def _kill_while_staging(server: ServerProcess, view: StoreView) -> None:
    """Stream a 50 MB artifact slowly over a raw socket; SIGKILL once 4 MB are staged."""
    boundary = secrets.token_hex(16)
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="metadata"\r\n\r\n'
        '{"format": "joblib"}\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="artifact"; filename="big.joblib"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + DECLARED_ARTIFACT + len(tail)
    request_head = (
        "POST /models/crash/versions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head + head)
        sent = 0
        while True:
            staged = view.staged()
            if staged and staged[0].stat().st_size >= STAGED_BEFORE_KILL:
                break
            assert sent < DECLARED_ARTIFACT, "the server never staged the upload"
            sock.sendall(os.urandom(CHUNK))
            sent += CHUNK
            time.sleep(0.01)
        assert len(view.staged()) == 1
        server.kill()  # mid-request: the body is neither complete nor committed
    assert sent < DECLARED_ARTIFACT


def _kill_during_multipart_upload(
    server: ServerProcess, view: StoreView, proxy: ThrottledProxy
) -> None:
    """Register a 20 MB model (S3 multipart above 16 MB) with the S3 link slowed to a crawl;
    SIGKILL once the multipart upload has begun and parts are flowing."""
    artifact = _big_model_bytes(20 * MB)
    errors: list[BaseException] = []

    def post() -> None:
        try:
            requests.post(
                f"{server.url}/models/crash/versions",
                files={
                    "artifact": ("big.joblib", artifact),
                    "metadata": (None, json.dumps({"format": "joblib"})),
                },
                timeout=120,
            )
        except requests.ConnectionError:
            return  # the server died under it: expected
        except BaseException as error:
            errors.append(error)
        else:
            errors.append(AssertionError("the registration finished before the kill"))

    proxy.rate = 256 * 1024  # bytes/s per connection towards S3
    baseline = proxy.sent
    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    wait_until(
        lambda: view.multipart_uploads() and proxy.sent - baseline > MB,
        timeout=60,
        interval=0.1,
        what="the S3 multipart upload to be under way",
    )
    server.kill()
    poster.join(timeout=30)
    proxy.rate = None
    assert not errors, errors


def test_kill_9_during_an_upload_leaves_no_version_and_no_visible_blob(case, tmp_path):
    env, view, proxy, phase = case
    server = ServerProcess(env, tmp_path, workers=1, threads=4, name="before-crash")
    try:
        kept = _register(server.url, "kept", joblib_bytes(fit_linear(seed=1)))
        orphan = _register(server.url, "kept", joblib_bytes(fit_linear(seed=2)))
        deleted = requests.delete(f"{server.url}/models/kept/versions/2", timeout=30)
        assert deleted.status_code == 204
        before = view.digests()
        assert {kept["sha256"], orphan["sha256"]} <= before
        assert view.staged() == []
        if phase == "staging":
            _kill_while_staging(server, view)
        else:
            _kill_during_multipart_upload(server, view, proxy)
    finally:
        server.stop()

    server = ServerProcess(env, tmp_path, workers=1, threads=4, name="after-crash")
    try:
        url = server.url
        # No version, no model: the crashed request never reached the registry's commit.
        assert requests.get(f"{url}/models/crash/versions", timeout=30).status_code == 404
        # No visible blob: the store holds exactly what it held before the crash.
        assert view.digests() == before
        # At most the abandoned staged files of the crashed request: the partial body; or, when
        # it died while sending to S3, the whole artifact (plus its ONNX conversion, staged
        # beside it when the version was being accelerated).
        abandoned = view.staged()
        if phase == "staging":
            assert len(abandoned) == 1
            assert STAGED_BEFORE_KILL <= abandoned[0].stat().st_size < DECLARED_ARTIFACT
        else:
            assert 1 <= len(abandoned) <= 2, abandoned
            artifact = max(abandoned, key=lambda path: path.stat().st_size)
            digest = _digest_of(artifact)
            # S3 never shows an incomplete multipart upload as an object; the upload itself
            # stays listed (its parts take space) until gc aborts it, once it is older than
            # the staging expiry (tests/integration/test_s3_abandoned_uploads.py).
            assert [u["Key"] for u in view.multipart_uploads()] == [
                f"{view.prefix}sha256/{digest[:2]}/{digest}"
            ]

        # gc with no grace: the orphans go (v2's artifact, and its ONNX conversion when there
        # is one); the staged file is younger than the staging expiry, so it might still be an
        # upload in progress and stays.
        orphans = before - referenced_digests(url)
        assert orphan["sha256"] in orphans
        out = modelreg_cli("storage", "gc", "--grace-minutes", "0", env=env)
        assert f"deleted {len(orphans)} " in out and "removed 0 abandoned uploads" in out, out
        assert view.staged() == abandoned
        assert view.digests() == referenced_digests(url)
        assert orphan["sha256"] not in view.digests()

        # Once they are older than the expiry they are abandoned for sure: gc removes them.
        old = time.time() - STAGING_EXPIRY.total_seconds() - 60
        for path in abandoned:
            os.utime(path, (old, old))
        out = modelreg_cli("storage", "gc", "--grace-minutes", "0", env=env)
        assert "deleted 0 " in out and f"removed {len(abandoned)} abandoned uploads" in out, out
        assert view.staged() == []
        if phase == "multipart":  # begun moments ago: it could still be running, so it stays
            assert len(view.multipart_uploads()) == 1
        # Nothing referenced was ever removed, and nothing unreferenced is left.
        assert view.digests() == referenced_digests(url)
        assert kept["sha256"] in view.digests()
        answer = requests.post(
            f"{url}/models/kept/1/predict", json={"instances": [[1, 2, 3]]}, timeout=30
        )
        assert answer.status_code == 200, answer.text

        # The registry takes the same upload again, whole, after the crash.
        again = _register(url, "crash", joblib_bytes(fit_linear(seed=3)))
        assert again["version"] == 1
        assert view.digests() == referenced_digests(url)
    finally:
        server.stop()


def _digest_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(MB):
            digest.update(chunk)
    return digest.hexdigest()
