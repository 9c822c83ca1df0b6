"""S3 multipart uploads left behind by a killed server are aborted by `storage gc`.

A server SIGKILLed while sending an artifact to S3 in parts cannot abort its multipart upload:
the object never becomes visible, but the parts stay stored (and billed) until the upload is
aborted (see tests/e2e/test_crash_during_upload.py for the crash itself). `clean_staging`,
which gc runs, aborts the uploads under the store's prefix begun before the staging expiry,
and only those.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from registry.services import storage_gc
from storage import key_for, open_store
from tests.conftest import fit_linear, joblib_bytes, make_config
from tests.helpers import register

DIGEST = "ab" + "0" * 62


def _abandon_upload(seaweedfs, key: str) -> str:
    """A multipart upload begun with one part sent, as a killed server leaves it."""
    client = seaweedfs.client()
    upload = client.create_multipart_upload(Bucket=seaweedfs.bucket, Key=key)
    client.upload_part(
        Bucket=seaweedfs.bucket,
        Key=key,
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"x" * 1024,
    )
    return upload["UploadId"]


def _uploads(seaweedfs, prefix: str) -> list[str]:
    answer = seaweedfs.client().list_multipart_uploads(Bucket=seaweedfs.bucket, Prefix=prefix)
    return [upload["Key"] for upload in answer.get("Uploads", ())]


@pytest.fixture
def abandoned(seaweedfs, s3_url):
    """An abandoned upload under this test's prefix and one under another prefix."""
    prefix = s3_url.split("/", 3)[3] + "/"
    other = prefix.rstrip("/") + "-other/"
    mine = f"{prefix}{key_for(DIGEST)}"
    theirs = f"{other}{key_for(DIGEST)}"
    ids = {mine: _abandon_upload(seaweedfs, mine), theirs: _abandon_upload(seaweedfs, theirs)}
    yield prefix, other, mine, theirs
    client = seaweedfs.client()
    for key in _uploads(seaweedfs, prefix) + _uploads(seaweedfs, other):
        client.abort_multipart_upload(Bucket=seaweedfs.bucket, Key=key, UploadId=ids[key])


def test_only_uploads_older_than_the_cutoff_under_the_prefix_are_aborted(
    tmp_path, seaweedfs, s3_url, s3_config_overrides, abandoned
):
    prefix, other, mine, theirs = abandoned
    store = open_store(s3_url, config=make_config(tmp_path, **s3_config_overrides))
    now = datetime.now(UTC)

    # Begun after the cutoff: it may still be running, so it is left alone.
    assert store.clean_staging(older_than=now - timedelta(hours=1)) == 0
    assert _uploads(seaweedfs, prefix) == [mine]

    assert store.clean_staging(older_than=now + timedelta(minutes=1)) == 1
    assert _uploads(seaweedfs, prefix) == []
    assert _uploads(seaweedfs, other) == [theirs]  # another store's prefix: never touched
    assert store.clean_staging(older_than=now + timedelta(minutes=1)) == 0


def test_credentials_that_may_not_list_uploads_only_skip_that_step(
    tmp_path, seaweedfs, s3_url, s3_config_overrides, abandoned
):
    prefix, _, mine, _ = abandoned
    refused = {**s3_config_overrides, "S3_SECRET_ACCESS_KEY": "not-the-secret"}
    store = open_store(s3_url, config=make_config(tmp_path, **refused))
    staged = store.stage()
    staged.write(b"half an upload")
    staged.flush()
    # The local staged file is still cleaned; the S3 refusal is logged, not raised.
    assert store.clean_staging(older_than=datetime.now(UTC) + timedelta(minutes=1)) == 1
    assert _uploads(seaweedfs, prefix) == [mine]


def test_storage_gc_aborts_an_abandoned_upload_and_keeps_every_referenced_blob(
    tmp_path, seaweedfs, s3_url, s3_config_overrides, abandoned, monkeypatch
):
    from manage import create_app

    prefix, other, _, theirs = abandoned
    app = create_app(make_config(tmp_path, STORAGE_URL=s3_url, **s3_config_overrides))
    try:
        client = app.test_client()
        assert register(client, "m", joblib_bytes(fit_linear())).status_code == 201
        deps = app.extensions["modelreg"]
        # The upload was begun moments ago; pretend the staging expiry has passed.
        monkeypatch.setattr(storage_gc, "STAGING_EXPIRY", timedelta(seconds=-60))
        report = storage_gc.collect_garbage(deps.uow, deps.store, grace=timedelta(0))
        assert report.staging_removed == 1 and report.deleted == []
        assert _uploads(seaweedfs, prefix) == [] and _uploads(seaweedfs, other) == [theirs]
        answer = client.post("/models/m/1/predict", json={"instances": [[1, 2, 3]]})
        assert answer.status_code == 200
    finally:
        app.extensions["modelreg"].engine.dispose()
