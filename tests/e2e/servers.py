"""Real processes for end-to-end tests: modelreg servers and a throwaway PostgreSQL cluster."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class ServerProcess:
    """`modelreg serve` in its own process (gunicorn when workers > 0)."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        *,
        workers: int = 1,
        threads: int = 4,
        name: str = "server",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.log_path = log_dir / f"{name}-{self.port}.log"
        command = [
            sys.executable,
            "-c",
            "from manage import cli; cli()",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if workers:
            command += ["--workers", str(workers), "--threads", str(threads)]
        # Like TestConfig: these tests promote tiny models without input examples.
        full_env = {**os.environ, "LOG_LEVEL": "WARNING", "REQUIRE_INPUT_EXAMPLE_FOR": "", **env}
        if workers:
            # gunicorn workers share metrics through files; keep them in the test's folder
            # rather than a fresh /tmp/modelreg-metrics-* left behind by every server.
            full_env.setdefault(
                "PROMETHEUS_MULTIPROC_DIR", str(log_dir / f"metrics-{name}-{self.port}")
            )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,
        )
        try:
            wait_until(self._healthy, timeout=60, interval=0.1, what=f"{name} to start")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{name} did not start:\n{self.log()}") from None

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()

    def kill(self) -> None:
        """A crash: SIGKILL the whole process group (gunicorn arbiter and its workers)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # The workers are in the same group; make sure none outlives the arbiter.
        wait_until(lambda: not _group_alive(self.process.pid), timeout=10, what="workers to die")
        self._log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def env_strings(settings: Mapping[str, Any]) -> dict[str, str]:
    """Config overrides (as given to `make_config`) as environment variables for a process."""
    return {
        name: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for name, value in settings.items()
    }


def modelreg_cli(*args: str, env: Mapping[str, str], timeout: float = 120) -> str:
    """Run `modelreg ARGS...` as its own process with ENV; returns stdout, fails loudly."""
    script = Path(sys.executable).with_name("modelreg")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from manage import cli; cli()"]
    )
    result = subprocess.run(
        [*command, *args],
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"modelreg {' '.join(args)} exited with {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


class ThrottledProxy:
    """A loopback TCP forwarder in front of a server, whose upload direction can be slowed.

    Fault tests put it between a modelreg server and SeaweedFS, so that an S3 upload is still
    in flight when the server is killed. `rate` is bytes per second per connection, client to
    upstream (None: full speed); `sent` counts the bytes forwarded upstream. `blackhole`
    stops forwarding anything in either direction (a network partition: nothing is refused,
    nothing answers) until it is cleared.
    """

    CHUNK = 16 * 1024

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rate: float | None = None
        self.blackhole = False
        self.sent = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, throttled: bool) -> None:
        try:
            while data := source.recv(self.CHUNK):
                while self.blackhole and not self._closed:
                    time.sleep(0.02)
                rate = self.rate if throttled else None
                if rate:
                    time.sleep(len(data) / rate)
                target.sendall(data)
                if throttled:
                    with self._lock:
                        self.sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._sockets.difference_update((source, target))

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


class StoreView:
    """What an artifact store really holds, read behind modelreg's back (os / boto3).

    `digests()` are the committed blobs, `staged()` the upload files in the staging folder,
    `multipart_uploads()` the S3 multipart uploads begun and never completed or aborted.
    """

    def __init__(self, env: Mapping[str, str], s3_client: Any = None) -> None:
        from urllib.parse import unquote, urlparse

        url = urlparse(env["STORAGE_URL"])
        self.s3 = url.scheme == "s3"
        if self.s3:
            if s3_client is None:
                raise ValueError("an s3:// store needs a boto3 client to look behind it")
            self.client = s3_client
            self.bucket = url.netloc
            self.prefix = url.path.strip("/") + "/" if url.path.strip("/") else ""
            self.staging = Path(env["S3_STAGING_DIR"])
        else:
            self.root = Path(unquote(url.path))
            self.staging = self.root / ".staging"

    def digests(self) -> set[str]:
        if not self.s3:
            base = self.root / "sha256"
            return {p.name for p in base.glob("*/*") if p.is_file()} if base.is_dir() else set()
        found = set()
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for item in page.get("Contents", ()):
                relative = item["Key"][len(self.prefix) :]
                assert relative.startswith("sha256/"), f"unexpected object {item['Key']!r}"
                found.add(relative.rsplit("/", 1)[-1])
        return found

    def staged(self) -> list[Path]:
        return sorted(self.staging.glob("*.part")) if self.staging.is_dir() else []

    def multipart_uploads(self) -> list[dict[str, Any]]:
        if not self.s3:
            return []
        answer = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        return list(answer.get("Uploads", ()))


def referenced_digests(url: str, http: Any = None) -> set[str]:
    """Every blob digest the registry at URL references: artifacts and their conversions.

    `http` is a requests.Session carrying a token when the server requires one."""
    if http is None:
        import requests as http

    digests: set[str] = set()
    names = [m["name"] for m in _all_pages(http, f"{url}/models", "models")]
    for name in names:
        for version in _all_pages(http, f"{url}/models/{name}/versions", "versions"):
            digests.add(version["sha256"])
            accel = version.get("acceleration") or {}
            if accel.get("status") != "ready":
                continue
            blob = accel.get("numpy") or accel  # a linear model's numpy form, or ONNX
            if blob.get("sha256"):
                digests.add(blob["sha256"])
    return digests


def _all_pages(http: Any, url: str, field: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "500"}
    while True:
        response = http.get(url, params=params, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body[field]
        if not body.get("next_cursor"):
            return items
        params["cursor"] = body["next_cursor"]


def _pg_bin(tool: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return found[-1] if found else shutil.which(tool)


class ThrowawayPostgres:
    """A PostgreSQL cluster made with initdb in a temp folder, on its own port.

    Fault tests stop and start it at will; the shared server on 5432 is never touched.
    Runs as the `postgres` OS user, since PostgreSQL refuses to run as root.
    """

    def __init__(self) -> None:
        initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not initdb or not self.pg_ctl:
            raise RuntimeError("initdb/pg_ctl not found")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="modelreg-pg-"))
        self.data = self.dir / "data"
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(
            [
                initdb,
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def _as_postgres(self, command: list[str]) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._as_postgres(
            [
                self.pg_ctl,
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.dir / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self) -> None:
        self._as_postgres([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_servers(
    env: dict[str, str], log_dir: Path, specs: list[dict[str, Any]]
) -> list[ServerProcess]:
    """Start several servers at once (most of start-up is importing the ML stack); if one
    fails, stop the others and raise its error. Each spec is ServerProcess's keywords."""
    from concurrent.futures import ThreadPoolExecutor, wait

    with ThreadPoolExecutor(len(specs)) as pool:
        starting = [pool.submit(ServerProcess, env, log_dir, **spec) for spec in specs]
        wait(starting)
    started = [f.result() for f in starting if f.exception() is None]
    if len(started) < len(specs):
        for server in started:
            server.stop()
        raise next(f.exception() for f in starting if f.exception() is not None)
    return started


def sqlite_env(folder: Path, **extra: str) -> dict[str, str]:
    """A server's settings on its own SQLite file and artifact folder, auth off."""
    return {
        "DATABASE_URL": f"sqlite:///{folder / 'r.db'}",
        "STORAGE_URL": (folder / "artifacts").as_uri(),
        "INSTANCE_PATH": str(folder / "instance"),
        "AUTH_DISABLED": "true",
        **extra,
    }


def register_joblib(url: str, name: str, artifact: bytes) -> dict[str, Any]:
    """Register a joblib artifact as the next version of `name`; the version record."""
    import json

    registered = requests.post(
        f"{url}/models/{name}/versions",
        files={
            "artifact": ("m.joblib", artifact),
            "metadata": (None, json.dumps({"format": "joblib"})),
        },
        timeout=60,
    )
    assert registered.status_code == 201, registered.text
    return registered.json()
