"""`modelreg storage gc`: orphans go, referenced blobs and registrations in flight stay."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from datetime import timedelta

from registry.db import utcnow
from registry.models import PendingUpload
from registry.services.storage_gc import PENDING_EXPIRY, STAGING_EXPIRY, collect_garbage
from storage import key_for
from tests.conftest import fit_linear, joblib_bytes
from tests.helpers import register

NOW = timedelta(0)


def _deps(app):
    deps = app.extensions["modelreg"]
    return deps.uow, deps.store


def _blobs(store) -> set[str]:
    return {blob.key for blob in store.iter_blobs()}


def test_orphans_are_deleted_and_referenced_blobs_kept(app, client):
    uow, store = _deps(app)
    kept = register(client, "m", joblib_bytes(fit_linear(seed=1))).get_json()
    orphan = register(client, "m", joblib_bytes(fit_linear(seed=2))).get_json()
    assert client.delete("/models/m/versions/2").status_code == 204
    assert _blobs(store) == {key_for(kept["sha256"]), key_for(orphan["sha256"])}

    dry = collect_garbage(uow, store, grace=NOW, dry_run=True)
    assert dry.deleted == [key_for(orphan["sha256"])] and len(_blobs(store)) == 2

    report = collect_garbage(uow, store, grace=NOW)
    assert report.deleted == [key_for(orphan["sha256"])]
    assert report.deleted_bytes == orphan["size"] and report.referenced == 1
    assert _blobs(store) == {key_for(kept["sha256"])}
    predicted = client.post("/models/m/1/predict", json={"instances": [[1, 2, 3]]})
    assert predicted.status_code == 200


def test_blobs_younger_than_the_grace_period_are_kept(app, client):
    uow, store = _deps(app)
    register(client, "m", joblib_bytes(fit_linear()))
    client.delete("/models/m/versions/1")
    report = collect_garbage(uow, store, grace=timedelta(minutes=5))
    assert report.deleted == [] and report.too_recent == 1 and len(_blobs(store)) == 1


def test_a_registration_in_flight_protects_its_blob(app):
    uow, store = _deps(app)
    staged = store.stage()
    staged.write(b"bytes being registered")
    stored = store.commit(staged)
    with uow(write=True) as work:
        marker = PendingUpload(sha256=stored.sha256, started_at=utcnow())
        work.session.add(marker)
        work.commit()
    assert collect_garbage(uow, store, grace=NOW).deleted == []
    assert store.exists(stored.key)

    with uow(write=True) as work:  # a registration that died a day ago protects nothing
        row = work.session.get(PendingUpload, marker.id)
        row.started_at = utcnow() - PENDING_EXPIRY - timedelta(minutes=1)
        work.commit()
    report = collect_garbage(uow, store, grace=NOW)
    assert report.deleted == [stored.key] and report.expired_markers == 1


def test_abandoned_staged_uploads_are_removed(app):
    uow, store = _deps(app)
    staged = store.stage()
    staged.write(b"half an upload")
    staged.flush()
    old = time.time() - STAGING_EXPIRY.total_seconds() - 60
    os.utime(staged.path, (old, old))
    fresh = store.stage()
    fresh.write(b"still uploading")
    report = collect_garbage(uow, store, grace=NOW)
    assert report.staging_removed == 1
    assert not os.path.exists(staged.path) and os.path.exists(fresh.path)
    fresh.discard()


class _SlowCommit:
    def __init__(self, store, seconds: float) -> None:
        self._store, self._seconds = store, seconds

    def __getattr__(self, name):
        return getattr(self._store, name)

    def commit(self, staged):
        stored = self._store.commit(staged)
        time.sleep(self._seconds)
        return stored


def test_gc_racing_registrations_of_an_orphans_bytes_never_loses_a_blob(app, client):
    """The orphan's bytes are registered again and again while gc sweeps in a loop: the blob
    of every version must exist once its registration has committed."""
    uow, store = _deps(app)
    # Widen the window between storing a blob and committing the version row that
    # references it (a slow object store), so that an unprotected sweep would hit it.
    services = app.extensions["modelreg"]
    app.extensions["modelreg"] = dataclasses.replace(
        services, store=_SlowCommit(store, seconds=0.03)
    )
    artifact = joblib_bytes(fit_linear())
    register(client, "race", artifact)
    client.delete("/models/race/versions/1")  # its blob is now an old orphan
    stop = threading.Event()
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            while not stop.is_set():
                collect_garbage(uow, store, grace=NOW)
        except BaseException as error:  # surface it in the main thread
            errors.append(error)

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    versions = []
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            response = register(client, "race", artifact)
            assert response.status_code == 201, response.get_json()
            record = response.get_json()
            versions.append(record["version"])
            assert store.exists(key_for(record["sha256"])), "blob lost under a registration"
            # Make the bytes an orphan again, so that the next registration re-uses them.
            assert client.delete(f"/models/race/versions/{record['version']}").status_code == 204
    finally:
        stop.set()
        sweeper.join(timeout=30)
    assert not errors, errors
    assert len(versions) >= 5
    final = register(client, "race", artifact).get_json()
    predicted = client.post(
        f"/models/race/{final['version']}/predict", json={"instances": [[1, 2, 3]]}
    )
    assert predicted.status_code == 200
