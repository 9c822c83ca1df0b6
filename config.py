"""Configuration read from the environment. Nothing happens at import time.

Every setting is an attribute of `Config`; `Config.from_env()` reads `MODELREG_*`-free names
(DATABASE_URL, STORAGE_URL, ...) so that the usual deployment tooling can set them directly.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def user_data_path() -> Path:
    """The per-user data folder (e.g. ~/.local/share/modelreg; XDG_DATA_HOME moves it)."""
    import platformdirs

    return platformdirs.user_data_path("modelreg", appauthor=False)


def default_instance_path() -> Path:
    """Where the embedded default keeps its SQLite file and artifacts when INSTANCE_PATH is
    not set: MODELREG_HOME, else the per-user data folder. Never the current directory, so
    every command finds the same database wherever it is run from."""
    home = os.environ.get("MODELREG_HOME", "").strip()
    return (Path(home).expanduser() if home else user_data_path()).resolve()


def instance_source(environ: Mapping[str, str] | None = None) -> str:
    """Which setting chose the embedded default's folder, for `modelreg info`."""
    env = os.environ if environ is None else environ
    if env.get("INSTANCE_PATH", "").strip():
        return "INSTANCE_PATH"
    if env.get("MODELREG_HOME", "").strip():
        return "MODELREG_HOME"
    return "the per-user data folder"


@dataclass
class Config:
    """All settings, with the embedded default's values.

    Sizes are bytes, times are seconds unless the name says otherwise.
    """

    # Where things live. Empty means "inside INSTANCE_PATH" (the embedded default).
    INSTANCE_PATH: str = ""
    DATABASE_URL: str = ""
    STORAGE_URL: str = ""
    # Object storage for `STORAGE_URL=s3://bucket/prefix` (AWS or SeaweedFS/MinIO).
    # An empty endpoint means AWS; empty keys mean boto3's default credential chain.
    S3_ENDPOINT_URL: str = ""
    S3_REGION: str = "us-east-1"
    S3_ACCESS_KEY_ID: str = ""
    S3_SECRET_ACCESS_KEY: str = field(default="", repr=False)  # never shown in a repr
    S3_ADDRESSING_STYLE: str = "path"  # path-style is what SeaweedFS and MinIO expect
    S3_MAX_POOL_CONNECTIONS: int = 20
    S3_CONNECT_TIMEOUT: float = 3.0
    S3_READ_TIMEOUT: float = 30.0
    S3_RETRIES: int = 3
    # Local folder for staged uploads; empty means <system temp>/modelreg-staging.
    S3_STAGING_DIR: str = ""
    # Apply pending migrations when the app starts (embedded default); production runs
    # `modelreg db upgrade` as a separate step and sets this false.
    AUTO_MIGRATE: bool = True

    # Database pool (ignored by SQLite).
    DB_POOL_SIZE: int = 5
    DB_MAX_OVERFLOW: int = 5
    DB_POOL_TIMEOUT: float = 5.0
    DB_CONNECT_TIMEOUT: float = 3.0
    DB_STATEMENT_TIMEOUT_MS: int = 10_000

    # Limits on input.
    MAX_ARTIFACT_BYTES: int = 2 * 1024**3
    MAX_METADATA_BYTES: int = 1024**2
    MAX_PREDICT_BODY_BYTES: int = 64 * 1024**2
    MAX_PREDICT_ROWS: int = 100_000
    MAX_PAGE_SIZE: int = 500
    DEFAULT_PAGE_SIZE: int = 50

    # Serving.
    MODEL_CACHE_MAX_MODELS: int = 32
    MODEL_CACHE_MAX_BYTES: int = 4 * 1024**3
    # Staleness bound, in other processes, of aliases and `latest`, and of token revocations.
    ALIAS_REFRESH_SECONDS: float = 1.0
    # Longest a request waits for the registry database on the serving path (alias and token
    # lookups, readiness) before answering from what it knows, or 503.
    REGISTRY_LOOKUP_TIMEOUT: float = 2.0
    ALLOW_PICKLE: bool = True
    # Aliases (comma-separated) a version may only be promoted to with an input example, so
    # that the promotion gate predicts something before it serves; empty: none.
    REQUIRE_INPUT_EXAMPLE_FOR: str = "production"
    # Exact class names ("package.module.Class", comma-separated) added to the allowlist of
    # what skops and joblib artifacts may contain: the escape hatch for trusted custom
    # classes. Empty by default; a module prefix or a function is never accepted here.
    TRUSTED_MODEL_CLASSES: str = ""
    # What a skops archive may inflate to, and its member count (zip bombs).
    MAX_UNPACKED_ARTIFACT_BYTES: int = 4 * 1024**3
    MAX_ARTIFACT_MEMBERS: int = 100_000
    # ONNX acceleration of scikit-learn versions: "auto" converts and verifies at registration
    # and serves the conversion when it matched; "off" neither converts nor serves ONNX.
    ACCELERATE: str = "auto"
    ONNX_THREADS: int = 1
    # Micro-batching of concurrent requests, per model, where load-time measurement shows
    # it helps (a forest's ~4 ms per call); "off" never batches.
    BATCHING: str = "auto"
    BATCH_MAX_WAIT_MS: float = 5.0
    BATCH_MAX_ROWS: int = 256
    # glibc malloc arenas per process of `modelreg serve`'s gunicorn server; 0 keeps glibc's
    # default of one per thread. One keeps each cached model's memory compact
    # (serving/malloc.py).
    MALLOC_ARENAS: int = 1
    # Slow clients (`modelreg serve`, both servers): a connection has REQUEST_HEADER_TIMEOUT
    # from its start (or, kept alive, from the first byte of its next request) to send a
    # request's head, REQUEST_BODY_TIMEOUT between two pieces of its body, and is dropped
    # when it accepts nothing of its answer for RESPONSE_WRITE_TIMEOUT. The gunicorn worker
    # buffers a body of up to REQUEST_BUFFER_BYTES before a thread sees the request, and
    # reads no further pipelined request from a connection with more than
    # RESPONSE_BUFFER_BYTES of answers waiting (serving/transport/).
    REQUEST_HEADER_TIMEOUT: float = 10.0
    REQUEST_BODY_TIMEOUT: float = 30.0
    RESPONSE_WRITE_TIMEOUT: float = 30.0
    REQUEST_BUFFER_BYTES: int = 1024**2
    RESPONSE_BUFFER_BYTES: int = 1024**2
    # gzip answers of at least this many bytes to clients that accept gzip; 0: never.
    COMPRESS_MIN_BYTES: int = 1024
    # Origins (comma-separated, or "*") whose browser pages may call the API; empty: none.
    CORS_ALLOWED_ORIGINS: str = ""
    # The model MLflow's bare `POST /invocations` serves, as "name" or "name:ref" (a version
    # number or an alias; the default alias rule without one); empty: that route is a 404.
    INVOCATIONS_MODEL: str = ""
    # gunicorn's control socket (for `gunicornc`) of a `serve --workers` server; empty: none.
    # gunicorn's own default is one path per user, which two servers on a host would share.
    CONTROL_SOCKET: str = ""

    # Auth: bearer tokens are required unless explicitly disabled for local development.
    AUTH_DISABLED: bool = False
    # How long a verified token is used before it is read again (revocations do not wait).
    AUTH_CACHE_SECONDS: float = 5.0
    LOCAL_ACTOR: str = "anonymous"
    # How long a web UI session lasts after sign-in (its token is still checked on every page).
    UI_SESSION_SECONDS: int = 8 * 3600

    # Prometheus: the most (model, version) label pairs a process names; beyond them, "_other".
    METRICS_MAX_MODEL_LABELS: int = 1000

    # Logs: JSON lines (or "text"), and one access-log line per request.
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: str = "json"
    ACCESS_LOG: bool = True

    # Webhooks (registry/webhooks/): each process of `modelreg serve` runs a dispatcher that
    # sends the deliveries committed with registry changes. Targets must be HTTPS and resolve
    # to public addresses, except hosts in WEBHOOK_ALLOWED_HOSTS (comma-separated: plain HTTP
    # and private addresses allowed for them) or everything when WEBHOOK_ALLOW_PRIVATE_TARGETS.
    WEBHOOK_DISPATCH: bool = True
    WEBHOOK_ALLOWED_HOSTS: str = ""
    WEBHOOK_ALLOW_PRIVATE_TARGETS: bool = False
    WEBHOOK_POLL_SECONDS: float = 1.0
    WEBHOOK_SENDERS: int = 4  # deliveries in flight per process (one per subscription)
    WEBHOOK_CONNECT_TIMEOUT: float = 3.0
    WEBHOOK_READ_TIMEOUT: float = 10.0
    # Failed deliveries are retried with exponential backoff and jitter (base doubling up to
    # the cap) until WEBHOOK_RETRY_SECONDS after the event, then marked failed.
    WEBHOOK_BACKOFF_BASE_SECONDS: float = 5.0
    WEBHOOK_BACKOFF_MAX_SECONDS: float = 3600.0
    WEBHOOK_RETRY_SECONDS: float = 24 * 3600.0
    # The delivery log: attempts kept per delivery, and days finished deliveries are kept.
    WEBHOOK_ATTEMPTS_KEPT: int = 10
    WEBHOOK_LOG_RETENTION_DAYS: float = 7.0
    # After a secret rotation, deliveries are signed with the old secret too for this long.
    WEBHOOK_SECRET_GRACE_SECONDS: float = 24 * 3600.0

    # Monitoring (docs/monitoring.md): every predicted row is folded into window summaries
    # in memory, flushed to the database every MONITOR_FLUSH_SECONDS (one transaction per
    # process); one process (a lease) closes windows and evaluates monitors. Off in tests,
    # which flush and evaluate by hand.
    MONITORING: bool = True
    MONITOR_BACKGROUND: bool = True
    # Progressive canaries (docs/policies.md): each serving process flushes its counts and
    # the lease holder judges every running canary once per CANARY_TICK_SECONDS.
    CANARY_BACKGROUND: bool = True
    CANARY_TICK_SECONDS: float = 1.0
    # Shadow copies of traffic policies run in one idle-priority child process per serving
    # process (docs/policies.md); false: copies are neither run nor counted here.
    SHADOWS: bool = True
    # ...and work only while at least this many cores are idle (0: whenever the kernel lets
    # them; under saturation their copies back up and drop instead of slowing the workers).
    SHADOW_MIN_IDLE_CORES: float = 0.5
    MONITOR_WINDOW_SECONDS: int = 300
    MONITOR_FLUSH_SECONDS: float = 5.0
    MONITOR_EVALUATE_SECONDS: float = 30.0
    MONITOR_MAX_PENDING_ROWS: int = 200_000
    MONITOR_ROWS_BINNED_PER_REQUEST: int = 256
    # The payload log: the share of requests logged (rows and outputs, for label joins and
    # audits), the rows kept per request, and retention (hours, and rows overall).
    MONITOR_PAYLOAD_SAMPLE: float = 0.01
    MONITOR_PAYLOAD_MAX_ROWS: int = 1_000
    MONITOR_PAYLOAD_BUFFER: int = 10_000
    MONITOR_PAYLOAD_RETENTION_HOURS: float = 72.0
    MONITOR_PAYLOAD_MAX_ENTRIES: int = 1_000_000
    MONITOR_RETENTION_DAYS: float = 30.0
    MONITOR_MAX_REFERENCE_BYTES: int = 64 * 1024 * 1024

    # Anything else a caller wants to hand to Flask (tests use it for TESTING=True).
    EXTRA: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build a Config from environment variables named like the attributes."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "EXTRA" or f.name not in env:
                continue
            raw = env[f.name]
            kind = type(getattr(cls(), f.name))
            try:
                if kind is bool:
                    values[f.name] = _parse_bool(f.name, raw)
                elif kind is int:
                    values[f.name] = int(raw.replace("_", ""))
                elif kind is float:
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise ValueError(f"invalid value for {f.name}: {raw!r} ({exc})") from None
        return cls(**values).resolved()

    def resolved(self) -> Config:
        """Fill the embedded-default locations from INSTANCE_PATH."""
        instance = (
            Path(self.INSTANCE_PATH).expanduser() if self.INSTANCE_PATH else default_instance_path()
        )
        return dataclasses.replace(
            self,
            INSTANCE_PATH=str(instance),
            DATABASE_URL=self.DATABASE_URL or f"sqlite:///{instance / 'modelreg.db'}",
            STORAGE_URL=self.STORAGE_URL or (instance / "artifacts").as_uri(),
        )

    def as_flask_mapping(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "EXTRA"}
        data.update(self.EXTRA)
        return data


@dataclass
class ProductionConfig(Config):
    """Scale-out defaults: migrations are a separate step and pickles are refused."""

    AUTO_MIGRATE: bool = False
    ALLOW_PICKLE: bool = False


@dataclass
class TestConfig(Config):
    """Small bounds so tests reach them; callers pass INSTANCE_PATH (a temp folder)."""

    MODEL_CACHE_MAX_MODELS: int = 8
    MODEL_CACHE_MAX_BYTES: int = 256 * 1024**2
    AUTH_DISABLED: bool = True
    # Conversion adds a second blob and ~0.1 s per registration; its own tests turn it on.
    ACCELERATE: str = "off"
    # Most tests promote tiny models without an example; the gate has its own tests.
    REQUIRE_INPUT_EXAMPLE_FOR: str = ""
    # No background dispatcher per test app; webhook tests start one or send directly.
    WEBHOOK_DISPATCH: bool = False
    # No monitoring thread per test app; monitoring tests flush and evaluate by hand.
    MONITOR_BACKGROUND: bool = False
    CANARY_BACKGROUND: bool = False
    # Shadow copies run whatever the load of the test machine (the gate has its own test).
    SHADOW_MIN_IDLE_CORES: float = 0.0
    EXTRA: dict[str, Any] = field(default_factory=lambda: {"TESTING": True})


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """The config class named by MODELREG_ENV (`production` or the embedded default)."""
    env = os.environ if environ is None else environ
    kind = env.get("MODELREG_ENV", "embedded").strip().lower()
    classes = {"embedded": Config, "development": Config, "production": ProductionConfig}
    if kind not in classes:
        raise ValueError(f"MODELREG_ENV must be one of {', '.join(classes)}, got {kind!r}")
    return classes[kind].from_env(env)
