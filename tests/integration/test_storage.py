"""One suite for every artifact store: the local folder and S3 (a real SeaweedFS).

The same contract tests run against both; S3-only tests cover credentials, an unreachable
endpoint, aborted multipart uploads and the app wired end to end on S3.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage import (
    ArtifactNotFound,
    ArtifactStore,
    ArtifactTooLarge,
    InvalidKey,
    StorageUnavailable,
    key_for,
    open_store,
)
from storage.local import LocalArtifactStore
from storage.s3 import S3ArtifactStore, parse_s3_url
from tests.conftest import fit_linear, joblib_bytes, make_config

MB = 1024 * 1024
DIGEST = hashlib.sha256(b"some bytes").hexdigest()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    url = request.getfixturevalue("s3_url")
    overrides = request.getfixturevalue("s3_config_overrides")
    built = open_store(url, config=make_config(tmp_path, STORAGE_URL=url, **overrides))
    assert isinstance(built, S3ArtifactStore)
    return built


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def read_all(store: ArtifactStore, key: str, chunk: int = 64 * 1024) -> bytes:
    parts = []
    with store.open(key) as stream:
        while data := stream.read(chunk):
            assert len(data) <= chunk
            parts.append(data)
    return b"".join(parts)


def staged_files(store: ArtifactStore) -> list[str]:
    directory = store.staging_dir()
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


@contextlib.contextmanager
def no_storage_access(store: ArtifactStore) -> Iterator[None]:
    """Fail if the block sends any S3 request or creates anything under the local root."""
    sent: list[str] = []
    if isinstance(store, S3ArtifactStore):
        events = store.client.meta.events

        def record(**kwargs: object) -> None:
            sent.append(str(kwargs.get("event_name")))

        events.register("before-send.s3", record)
        try:
            yield
        finally:
            events.unregister("before-send.s3", record)
    else:
        assert isinstance(store, LocalArtifactStore)
        before = store.root.exists()
        yield
        assert store.root.exists() == before
    assert sent == []


# ---- the contract, for every store --------------------------------------------------------


def test_put_returns_the_content_address(store: ArtifactStore):
    data = payload(1000)
    stored = store.put(io.BytesIO(data))
    sha = hashlib.sha256(data).hexdigest()
    assert stored.sha256 == sha
    assert stored.size == len(data)
    assert stored.key == key_for(sha) == f"sha256/{sha[:2]}/{sha}"
    assert staged_files(store) == []  # the staged file is gone once committed


def test_open_reads_back_the_same_bytes_in_chunks(store: ArtifactStore):
    data = payload(300_000, seed=1)
    stored = store.put(io.BytesIO(data))
    assert read_all(store, stored.key, chunk=7777) == data
    with store.open(stored.key) as stream:
        assert stream.read(10) == data[:10]
        assert stream.read() == data[10:]
        assert stream.read(10) == b""


def test_identical_bytes_are_one_blob_and_a_second_commit_refreshes_it(store: ArtifactStore):
    data = payload(5000, seed=2)
    first = store.put(io.BytesIO(data))
    [before] = list(store.iter_blobs())
    time.sleep(1.1)  # S3 LastModified has one-second resolution
    second = store.put(io.BytesIO(data))
    assert second == first
    blobs = list(store.iter_blobs())
    assert len(blobs) == 1
    [after] = blobs
    assert after.key == first.key and after.size == len(data)
    assert after.modified_at >= before.modified_at  # never backwards...
    assert after.modified_at > before.modified_at  # ...and really refreshed for gc
    assert read_all(store, first.key) == data
    assert staged_files(store) == []


def test_exists_size_and_delete(store: ArtifactStore):
    data = payload(1234, seed=3)
    stored = store.put(io.BytesIO(data))
    assert store.exists(stored.key)
    assert store.size(stored.key) == 1234
    store.delete(stored.key)
    assert not store.exists(stored.key)
    with pytest.raises(ArtifactNotFound):
        store.size(stored.key)
    store.delete(stored.key)  # deleting a missing blob is fine
    store.delete(key_for(DIGEST))


def test_missing_blob_is_not_found(store: ArtifactStore):
    key = key_for(DIGEST)
    assert not store.exists(key)
    with pytest.raises(ArtifactNotFound):
        store.open(key)
    with pytest.raises(ArtifactNotFound):
        store.size(key)


def test_iter_blobs_lists_exactly_what_was_committed(store: ArtifactStore):
    assert list(store.iter_blobs()) == []
    stored = [store.put(io.BytesIO(payload(100 + i, seed=i))) for i in range(3)]
    _plant_junk(store)
    blobs = list(store.iter_blobs())
    assert sorted((b.key, b.size) for b in blobs) == sorted((s.key, s.size) for s in stored)
    now = datetime.now(UTC)
    for blob in blobs:
        assert blob.modified_at.tzinfo is not None
        assert now - timedelta(minutes=5) < blob.modified_at <= now + timedelta(seconds=5)


def _plant_junk(store: ArtifactStore) -> None:
    """Things that are not content addresses: iter_blobs must skip them."""
    sha = hashlib.sha256(b"junk").hexdigest()
    names = [f"sha256/{sha[:2]}/{sha}.part", f"sha256/zz/{sha}", f"sha256/00/{sha}", "sha256/x"]
    if isinstance(store, LocalArtifactStore):
        for name in names:
            path = store.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"junk")
    else:
        assert isinstance(store, S3ArtifactStore)
        for name in [*names, "other/thing"]:
            store.client.put_object(Bucket=store.bucket, Key=store.prefix + name, Body=b"junk")
        # A blob of another store sharing the bucket (a sibling prefix) is not ours either.
        sibling = store.prefix.rstrip("/") + "-sibling/" + key_for(sha)
        store.client.put_object(Bucket=store.bucket, Key=sibling, Body=b"junk")


INVALID_KEYS = [
    "../x",
    "sha256/zz/..",
    "sha256/../../etc/passwd",
    "/etc/passwd",
    "/" + key_for(DIGEST),
    f"sha256/{DIGEST[:2]}/{DIGEST}/../{DIGEST}",
    f"sha256/{'0' if DIGEST[0] != '0' else '1'}{DIGEST[1]}/{DIGEST}",  # wrong fan-out prefix
    f"md5/{DIGEST[:2]}/{DIGEST}",
    f"t-prefix/{key_for(DIGEST)}",  # a full object key instead of a store key
    key_for(DIGEST).upper(),
    key_for(DIGEST) + "\n",
    "",
]


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused_without_touching_storage(store: ArtifactStore, key: str):
    with no_storage_access(store):
        for operation in (store.open, store.exists, store.size, store.delete):
            with pytest.raises(InvalidKey):
                operation(key)


def test_too_large_while_staging(store: ArtifactStore):
    staged = store.stage(max_bytes=10)
    staged.write(b"0123456789")
    with pytest.raises(ArtifactTooLarge):
        staged.write(b"x")
    assert os.path.exists(staged.path)
    staged.discard()
    assert not os.path.exists(staged.path)
    with pytest.raises(ArtifactTooLarge):
        store.put(io.BytesIO(payload(100)), max_bytes=99)
    assert staged_files(store) == []
    assert list(store.iter_blobs()) == []


def test_a_discarded_staged_upload_leaves_nothing(store: ArtifactStore):
    with store.stage() as staged:
        staged.write(payload(4096, seed=4))
        path = staged.path
    assert not os.path.exists(path)
    assert staged_files(store) == []
    assert list(store.iter_blobs()) == []
    assert not store.exists(key_for(hashlib.sha256(payload(4096, seed=4)).hexdigest()))


def test_clean_staging_removes_abandoned_files(store: ArtifactStore):
    staged = store.stage()
    staged.write(b"abandoned")
    staged.finish()
    old = time.time() - 3600
    os.utime(staged.path, (old, old))
    fresh = store.stage()
    assert store.clean_staging(datetime.now(UTC) - timedelta(minutes=10)) == 1
    assert not os.path.exists(staged.path)
    assert os.path.exists(fresh.path)
    fresh.discard()


def test_a_40_mb_upload(store: ArtifactStore):
    data = payload(40 * MB, seed=5)
    stored = store.put(io.BytesIO(data))
    digest = hashlib.sha256(data).hexdigest()
    assert (stored.sha256, stored.size) == (digest, 40 * MB)
    check = hashlib.sha256()
    size = 0
    with store.open(stored.key) as stream:
        while chunk := stream.read(MB):
            check.update(chunk)
            size += len(chunk)
    assert (check.hexdigest(), size) == (digest, 40 * MB)
    if isinstance(store, S3ArtifactStore):
        head = store.client.head_object(Bucket=store.bucket, Key=store.prefix + stored.key)
        assert head["ETag"].strip('"').endswith("-5")  # 5 parts of 8 MB: it was multipart
        assert head["Metadata"]["sha256"] == digest


def test_check_passes(store: ArtifactStore):
    store.check()


# ---- S3 only ----------------------------------------------------------------------------


def s3_store(url: str, overrides: dict, **changes: object) -> S3ArtifactStore:
    store = S3ArtifactStore.from_config(url, _Settings({**overrides, **changes}))
    return store


class _Settings:
    def __init__(self, values: dict) -> None:
        self.__dict__.update(values)


def test_s3_url_parsing():
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/") == ("bucket", "")
    assert parse_s3_url("s3://bucket//a/b/") == ("bucket", "a/b/")
    for bad in ("s3://", "s3:///prefix", "file:///x", "s3://b/../x", "s3://b/p?x=1"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)
    with pytest.raises(ValueError, match="together"):
        S3ArtifactStore("s3://b", access_key_id="only-the-id")


def test_open_store_dispatch(tmp_path: Path):
    local = open_store((tmp_path / "a").as_uri())
    assert isinstance(local, LocalArtifactStore)
    assert isinstance(open_store(str(tmp_path / "b")), LocalArtifactStore)
    config = make_config(tmp_path, S3_ENDPOINT_URL="http://127.0.0.1:9", S3_RETRIES=0)
    s3 = open_store("s3://bucket/some/prefix", config=config)
    assert isinstance(s3, S3ArtifactStore)
    assert (s3.bucket, s3.prefix) == ("bucket", "some/prefix/")
    assert s3.endpoint_url == config.S3_ENDPOINT_URL
    with pytest.raises(ValueError):
        open_store("gs://bucket")


def test_s3_records_the_sha256(s3_url: str, s3_config_overrides: dict):
    store = s3_store(s3_url, s3_config_overrides)
    data = payload(2048, seed=6)
    stored = store.put(io.BytesIO(data))
    head = store.client.head_object(
        Bucket=store.bucket, Key=store.prefix + stored.key, ChecksumMode="ENABLED"
    )
    assert head["Metadata"]["sha256"] == stored.sha256
    # SeaweedFS accepts ChecksumAlgorithm=SHA256: a single PUT carries the full-object digest.
    assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(stored.sha256)).decode()


def test_s3_large_blob_refresh_uses_a_multipart_copy_and_keeps_the_bytes(
    s3_url: str, s3_config_overrides: dict, seaweedfs
):
    store = s3_store(s3_url, s3_config_overrides)
    store._copy_object_limit = 1 * MB  # what a > 5 GiB blob would do, on 20 MB
    data = payload(20 * MB, seed=7)
    first = store.put(io.BytesIO(data))
    [before] = list(store.iter_blobs())
    time.sleep(1.1)
    assert store.put(io.BytesIO(data)) == first
    [after] = list(store.iter_blobs())
    assert after.modified_at > before.modified_at
    assert hashlib.sha256(read_all(store, first.key, chunk=MB)).hexdigest() == first.sha256


def test_s3_blob_deleted_between_head_and_refresh_is_uploaded_again(
    s3_url: str, s3_config_overrides: dict, seaweedfs
):
    store = s3_store(s3_url, s3_config_overrides)
    data = payload(3000, seed=9)
    stored = store.put(io.BytesIO(data))
    behind = seaweedfs.client()

    def gc_sweeps_in_between(params: dict, **_: object) -> None:
        behind.delete_object(Bucket=params["Bucket"], Key=params["Key"])

    store.client.meta.events.register("before-parameter-build.s3.CopyObject", gc_sweeps_in_between)
    assert store.put(io.BytesIO(data)) == stored
    assert read_all(store, stored.key) == data


def test_s3_failed_multipart_upload_is_aborted_and_leaves_nothing(
    s3_url: str, s3_config_overrides: dict, seaweedfs
):
    from botocore.exceptions import EndpointConnectionError

    store = s3_store(s3_url, s3_config_overrides)
    parts: list[int] = []

    def fail_second_part(params: dict, **_: object) -> None:
        parts.append(params["PartNumber"])
        if len(parts) >= 2:
            raise EndpointConnectionError(endpoint_url=seaweedfs.endpoint)

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    data = payload(40 * MB, seed=8)
    with pytest.raises(StorageUnavailable, match="unreachable"):
        store.put(io.BytesIO(data))
    assert len(parts) >= 2
    sha = hashlib.sha256(data).hexdigest()
    behind = seaweedfs.client()
    listed = behind.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    assert listed.get("KeyCount", 0) == 0
    uploads = behind.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    assert uploads.get("Uploads", []) == []  # boto3's managed transfer aborted it
    assert not store.exists(key_for(sha))
    assert staged_files(store) == []


def test_s3_wrong_secret_is_refused_as_credentials(
    s3_url: str, s3_config_overrides: dict, seaweedfs
):
    good = s3_store(s3_url, s3_config_overrides)
    stored = good.put(io.BytesIO(b"guarded"))
    wrong_secret = "not-the-secret-" + seaweedfs.secret_key[:8]
    bad = s3_store(s3_url, s3_config_overrides, S3_SECRET_ACCESS_KEY=wrong_secret)
    unknown = s3_store(s3_url, s3_config_overrides, S3_ACCESS_KEY_ID="NOSUCHKEY")
    for store in (bad, unknown):
        for operation in (
            store.check,
            lambda s=store: s.open(stored.key),
            lambda s=store: s.exists(stored.key),
            lambda s=store: s.put(io.BytesIO(b"intruder")),
            lambda s=store: list(s.iter_blobs()),
        ):
            with pytest.raises(StorageUnavailable, match="credentials") as caught:
                operation()
            message = str(caught.value)
            assert wrong_secret not in message
            assert seaweedfs.secret_key not in message
    assert [b.key for b in good.iter_blobs()] == [stored.key]


def test_s3_without_any_credentials_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_url: str, s3_config_overrides: dict
):
    # boto3's default chain finds nothing: no env keys, no files, and no instance metadata
    # lookup (which would leave loopback).
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = s3_store(s3_url, s3_config_overrides, S3_ACCESS_KEY_ID="", S3_SECRET_ACCESS_KEY="")
    for operation in (store.check, lambda: store.put(io.BytesIO(b"anonymous"))):
        with pytest.raises(StorageUnavailable, match="credentials"):
            operation()


def test_s3_unreachable_endpoint_is_unavailable_quickly(tmp_path: Path, s3_config_overrides):
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = s3_store(
        "s3://modelreg-test/down",
        s3_config_overrides,
        S3_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        S3_CONNECT_TIMEOUT=0.5,
        S3_RETRIES=1,
    )
    key = key_for(DIGEST)
    for operation in (
        store.check,
        lambda: store.open(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: list(store.iter_blobs()),
        lambda: store.put(io.BytesIO(b"nowhere to go")),
    ):
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="unreachable"):
            operation()
        assert time.monotonic() - started < 5
    assert staged_files(store) == []


def test_s3_server_down_then_back(s3_url: str, s3_config_overrides: dict, seaweedfs):
    store = s3_store(s3_url, s3_config_overrides, S3_CONNECT_TIMEOUT=0.5, S3_RETRIES=1)
    stored = store.put(io.BytesIO(b"survives a restart"))
    seaweedfs.stop()
    try:
        for operation in (
            store.check,
            lambda: store.open(stored.key),
            lambda: store.put(io.BytesIO(b"while down")),
        ):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                operation()
            assert time.monotonic() - started < 5
    finally:
        seaweedfs.start()
    store.check()
    assert read_all(store, stored.key) == b"survives a restart"


def test_app_registers_predicts_and_downloads_on_s3(
    tmp_path: Path, s3_url: str, s3_config_overrides: dict, seaweedfs
):
    import manage
    from tests.helpers import register

    config = make_config(tmp_path, STORAGE_URL=s3_url, **s3_config_overrides)
    app = manage.create_app(config)
    try:
        store = app.extensions["modelreg"].store
        assert isinstance(store, S3ArtifactStore) and store.endpoint_url == seaweedfs.endpoint
        client = app.test_client()
        model = fit_linear()
        artifact = joblib_bytes(model)
        response = register(client, "s3model", artifact)
        assert response.status_code == 201, response.get_data(as_text=True)
        body = response.get_json()
        assert body["sha256"] == hashlib.sha256(artifact).hexdigest()
        assert [b.key for b in store.iter_blobs()] == [key_for(body["sha256"])]

        rows = [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]]
        predicted = client.post("/models/s3model/1/predict", json={"instances": rows})
        assert predicted.status_code == 200, predicted.get_data(as_text=True)
        expected = model.predict(rows).tolist()
        assert predicted.get_json()["predictions"] == pytest.approx(expected)

        download = client.get("/models/s3model/versions/1/artifact")
        assert download.status_code == 200
        assert download.data == artifact
        assert download.headers["X-Content-SHA256"] == body["sha256"]

        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.get_data(as_text=True)
        assert ready.get_json()["checks"]["storage"]["status"] == "ok"
    finally:
        app.extensions["modelreg"].engine.dispose()


def test_ranged_reads(store: ArtifactStore):
    data = bytes(range(256)) * 64
    staged = store.stage()
    staged.write(data)
    stored = store.commit(staged)
    with store.open(stored.key, 100, 50) as part:
        assert part.read() == data[100:150]
    with store.open(stored.key, 16_000) as rest:
        assert rest.read() == data[16_000:]
    with store.open(stored.key, 0, 10) as head:
        assert head.read(4) == data[:4] and head.read() == data[4:10]


# ---- a corrupted blob is repaired by committing the right bytes again ------------------------


def _overwrite_blob(store: ArtifactStore, key: str, data: bytes) -> None:
    """Corrupt a stored blob behind the store's back, keeping its size (and, on S3, even the
    sha256 it was recorded with)."""
    if isinstance(store, LocalArtifactStore):
        (store.root / key).write_bytes(data)
        return
    sha = key.rsplit("/", 1)[1]
    store.client.put_object(
        Bucket=store.bucket, Key=store.prefix + key, Body=data, Metadata={"sha256": sha}
    )


def test_committing_the_right_bytes_replaces_a_corrupted_blob_of_the_same_size(
    store: ArtifactStore,
):
    data = payload(5000, seed=11)
    stored = store.put(io.BytesIO(data))
    corrupted = bytearray(data)
    corrupted[1234] ^= 0xFF
    _overwrite_blob(store, stored.key, bytes(corrupted))
    assert read_all(store, stored.key) != data

    assert store.put(io.BytesIO(data)) == stored
    assert read_all(store, stored.key) == data
    assert [b.key for b in store.iter_blobs()] == [stored.key]
    assert staged_files(store) == []


def test_an_intact_blob_is_reused_not_rewritten(store: ArtifactStore):
    data = payload(5000, seed=12)
    stored = store.put(io.BytesIO(data))
    if isinstance(store, LocalArtifactStore):
        inode = os.stat(store.root / stored.key).st_ino
        store.put(io.BytesIO(data))
        assert os.stat(store.root / stored.key).st_ino == inode  # the same file, touched
    else:
        uploads: list[str] = []
        store.client.meta.events.register(
            "before-send.s3.PutObject", lambda **kwargs: uploads.append("put")
        )
        store.put(io.BytesIO(data))
        assert uploads == []  # checked and copied onto itself, not uploaded again
    assert read_all(store, stored.key) == data


@pytest.mark.parametrize("where", ["local", "s3"])
def test_registering_the_right_bytes_again_repairs_a_corrupted_artifact(
    request: pytest.FixtureRequest, tmp_path: Path, where: str
):
    import manage
    from tests.helpers import register

    overrides: dict = {}
    if where == "s3":
        url = request.getfixturevalue("s3_url")
        overrides = {"STORAGE_URL": url, **request.getfixturevalue("s3_config_overrides")}
    app = manage.create_app(make_config(tmp_path, **overrides))
    try:
        client = app.test_client()
        store = app.extensions["modelreg"].store
        artifact = joblib_bytes(fit_linear())
        first = register(client, "m", artifact).get_json()
        damaged = bytearray(artifact)
        damaged[len(damaged) // 2] ^= 0xFF
        _overwrite_blob(store, key_for(first["sha256"]), bytes(damaged))
        rows = {"instances": [[1.0, 2.0, 3.0]]}
        assert client.post("/models/m/1/predict", json=rows).status_code == 503

        second = register(client, "m", artifact)
        assert second.status_code == 201, second.get_data(as_text=True)
        assert second.get_json()["sha256"] == first["sha256"]
        predicted = client.post("/models/m/2/predict", json=rows)
        assert predicted.status_code == 200, predicted.get_data(as_text=True)
        assert client.get("/models/m/versions/1/artifact").data == artifact
    finally:
        app.extensions["modelreg"].engine.dispose()
