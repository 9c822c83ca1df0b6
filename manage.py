"""Composition root and command line: `create_app()` wires everything; `modelreg ...` drives it."""

from __future__ import annotations

import atexit
import dataclasses
import getpass
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from flask import Flask, Response, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

import migrations
from config import Config, load_config
from registry import access, auth
from registry.access import SAFE_METHODS
from registry.answers import AnswerFinisher, Finished, request_id_from
from registry.auth import ROLES, Authenticator
from registry.bounded import BoundedLookups
from registry.db import Base, engine_options, tune_engine
from registry.http import EXTENSION_KEY, AppServices, reject_malformed_paths
from registry.logs import configure_logging
from registry.problems import register_error_handlers
from registry.services.versions import get_version, ready_version_numbers
from registry.unit_of_work import UnitOfWorkFactory
from storage import open_store

log = logging.getLogger("modelreg")


def _resolve_config(config: Config | Mapping[str, Any] | None) -> Config:
    if config is None:
        return load_config()
    if isinstance(config, Config):
        return config.resolved()
    base = load_config()
    return dataclasses.replace(base, **dict(config)).resolved()


def _prepare_embedded_paths(config: Config) -> None:
    url = make_url(config.DATABASE_URL)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Build a fully wired application. Nothing is created at import time."""
    # The serving stack (numpy, pandas, onnxruntime...) is imported here, not by the command
    # line: a gunicorn master or `modelreg tokens` never needs it.
    from serving.dataplane import DataPlane
    from serving.formats import TrustPolicy
    from serving.inspection import make_inspector
    from serving.metrics import Metrics
    from serving.runtime import ServingRuntime

    config = _resolve_config(config)
    _prepare_embedded_paths(config)
    # No static route: the docs page serves its own files (registry/openapi_views.py).
    app = Flask("modelreg", instance_path=config.INSTANCE_PATH, static_folder=None)
    # werkzeug answers a path with "//" by a 308 to the merged path, an absolute URL built
    # from the client's Host header, before any auth: an open redirect. No route has an empty
    # segment, so such a path is simply not found. Set before any rule is added.
    app.url_map.merge_slashes = False
    app.config.from_mapping(config.as_flask_mapping())
    app.config["SQLALCHEMY_DATABASE_URI"] = config.DATABASE_URL
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(config.DATABASE_URL, config)
    app.config["MAX_CONTENT_LENGTH"] = config.MAX_PREDICT_BODY_BYTES

    db = SQLAlchemy(metadata=Base.metadata)
    db.init_app(app)
    with app.app_context():
        engine: Engine = db.engine
    tune_engine(engine)
    if config.AUTO_MIGRATE:
        migrations.upgrade(engine)

    uow = UnitOfWorkFactory(sessionmaker(bind=engine, expire_on_commit=False))
    store = open_store(config.STORAGE_URL, config=config)

    def fetch(name: str, ref: Any) -> Any:
        return get_version(uow, name, ref)

    metrics = Metrics(max_model_labels=config.METRICS_MAX_MODEL_LABELS)
    lookups = BoundedLookups()  # serving-path registry queries, each with a deadline
    serving = ServingRuntime(
        fetch,
        store,
        config,
        on_cache_event=metrics.on_cache_event,
        on_batch=metrics.on_batch,
        lookups=lookups,
    )
    uow.subscribe(serving.on_registry_change)  # committed registry changes reach its cache
    authenticator = Authenticator(
        uow,
        cache_seconds=config.AUTH_CACHE_SECONDS,
        # Read twice per bound: a revocation committed just after a read is still refused
        # within ALIAS_REFRESH_SECONDS, query and answer included (one tiny query per half
        # second per process, only while requests arrive).
        refresh_seconds=config.ALIAS_REFRESH_SECONDS / 2,
        lookups=lookups,
        lookup_timeout=config.REGISTRY_LOOKUP_TIMEOUT,
    )
    dataplane = DataPlane(
        serving,
        ready_versions=lambda name: lookups.call(
            ("ready-versions", name),
            lambda: ready_version_numbers(uow, name),
            config.REGISTRY_LOOKUP_TIMEOUT,
        ),
        alias_refresh_seconds=config.ALIAS_REFRESH_SECONDS,
    )
    finisher = AnswerFinisher(
        metrics,
        knows_model=dataplane.knows_model,
        auth_disabled=config.AUTH_DISABLED,
        access_log=config.ACCESS_LOG,
    )
    webhooks = _webhook_dispatcher(uow, config, metrics)
    app.extensions[EXTENSION_KEY] = AppServices(
        config=config,
        engine=engine,
        uow=uow,
        store=store,
        inspect_artifact=make_inspector(TrustPolicy.from_config(config)),
        check_version=serving.check_version,
        authenticator=authenticator,
        lookups=lookups,
        metrics=metrics,
        serving=serving,
        dataplane=dataplane,
        finisher=finisher,
        webhooks=webhooks,
    )
    register_error_handlers(app)
    _register_request_hooks(app, finisher)
    access.install(
        app, authenticator, disabled=config.AUTH_DISABLED, local_actor=config.LOCAL_ACTOR
    )

    from registry.openapi_views import bp as openapi_bp
    from registry.token_views import bp as tokens_bp
    from registry.webhook_views import bp as webhooks_bp
    from registry.views import bp as registry_bp
    from serving.metrics import bp as metrics_bp
    from serving.ops import bp as ops_bp
    from serving.v2 import bp as v2_bp
    from serving.views import bp as serving_bp

    app.register_blueprint(registry_bp)
    app.register_blueprint(tokens_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(serving_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(v2_bp)
    app.register_blueprint(openapi_bp)
    from serving.fastpath import PredictFastPath

    app.wsgi_app = PredictFastPath(  # type: ignore[method-assign]
        app.wsgi_app,
        dataplane,
        authenticator,
        finisher,
        auth_disabled=config.AUTH_DISABLED,
        local_actor=config.LOCAL_ACTOR,
        max_body_bytes=config.MAX_PREDICT_BODY_BYTES,
    )
    return app


def _webhook_dispatcher(uow: UnitOfWorkFactory, config: Config, metrics: Any) -> Any:
    """This process's webhook sender; its thread starts only where WEBHOOK_DISPATCH is on
    (every `modelreg serve` process; test apps send by hand)."""
    from registry.webhooks.dispatcher import DispatchSettings, Dispatcher
    from registry.webhooks.metrics import WebhookMetrics
    from registry.webhooks.targets import TargetPolicy

    webhook_metrics = WebhookMetrics(metrics.registry)
    dispatcher = Dispatcher(
        uow.session_factory,
        DispatchSettings.from_config(config),
        TargetPolicy.from_config(config),
        on_outcome=webhook_metrics.outcome,
        on_queue=webhook_metrics.queue,
    )
    if config.WEBHOOK_DISPATCH:
        dispatcher.start()
        atexit.register(dispatcher.stop)
    return dispatcher


def _register_request_hooks(app: Flask, finisher: AnswerFinisher) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.request_id = request_id_from(request.headers.get("X-Request-ID", ""))

    app.before_request(reject_malformed_paths)

    @app.after_request
    def _finish(response: Response) -> Response:
        headers = response.headers
        request_id = g.get("request_id", "")
        headers.extend(finisher.trailer(request_id, has_cache_control="Cache-Control" in headers))
        status = response.status_code
        mutation = (
            request.method not in SAFE_METHODS
            and status < 300
            and request.blueprint in ("registry", "tokens")
        )
        finisher.record(
            Finished(
                route=request.url_rule.rule if request.url_rule is not None else "unmatched",
                method=request.method,
                path=request.path,
                status=status,
                seconds=time.perf_counter() - g.get("started", time.perf_counter()),
                model=(request.view_args or {}).get("name"),
                version=headers.get("X-Model-Version", ""),
                actor=g.get("actor"),
                request_id=request_id,
                model_exists=status < 400 and request.blueprint == "registry",
            )
        )
        if mutation:
            finisher.count_mutation(request.endpoint.rsplit(".", 1)[-1])
        return response


# ---- command line ----------------------------------------------------------------------

DEFAULT_PORT = 8080


def _client(ctx: click.Context) -> Any:
    """A client for --url, or one running in-process on the embedded default."""
    from registry.client import Client

    options = ctx.find_root().params
    if options.get("url"):
        return Client(options["url"], token=options.get("token"))
    # In-process on the local database: whoever can open the database file already holds
    # every right, so the embedded client acts as a local admin named after the OS user.
    config = dataclasses.replace(
        _resolve_config(None), AUTH_DISABLED=True, LOCAL_ACTOR=f"cli:{getpass.getuser()}"
    )
    logging.getLogger("registry.access").setLevel(logging.ERROR)
    return Client.for_app(create_app(config))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


class _Cli(click.Group):
    """Errors from the server or the services end the command with a message, not a trace."""

    def invoke(self, ctx: click.Context) -> Any:
        from registry.client import ApiError
        from registry.errors import ModelregError

        try:
            return super().invoke(ctx)
        except ApiError as error:
            raise click.ClickException(str(error)) from None
        except ModelregError as error:
            raise click.ClickException(f"{error.detail} {error.errors or ''}".strip()) from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="MODELREG_URL", help="A running server; default: embedded.")
@click.option("--token", envvar="MODELREG_TOKEN", help="Bearer token for --url.")
@click.version_option(package_name="modelreg")
def cli(url: str | None, token: str | None) -> None:
    """modelreg: a model registry and multi-model serving platform."""
    # Commands other than `serve` talk to people: plain text, warnings and up.
    configure_logging(os.environ.get("LOG_LEVEL", "WARNING"), os.environ.get("LOG_FORMAT", "text"))


def _prepare_database(config: Config) -> None:
    """Migrate once, before any worker starts, and warn when no token can get in."""
    engine = _engine()
    try:
        if config.AUTO_MIGRATE:
            migrations.upgrade(engine)
        if not config.AUTH_DISABLED and not migrations.pending(engine):
            uow = UnitOfWorkFactory(sessionmaker(bind=engine))
            if auth.count_tokens(uow) == 0:
                click.echo(
                    "No API tokens exist yet: every request will be refused. Create the "
                    "first one with\n  modelreg tokens create --name admin --role admin",
                    err=True,
                )
    finally:
        engine.dispose()  # workers make their own connections


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option(
    "--workers",
    type=int,
    default=0,
    help="Run gunicorn with this many worker processes (production server).",
)
@click.option(
    "--threads", type=int, default=4, show_default=True, help="Threads per gunicorn worker."
)
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Start the HTTP service (development server unless --workers is given)."""
    config = _resolve_config(None)
    configure_logging(config.LOG_LEVEL, config.LOG_FORMAT)
    metrics = None
    if workers > 0:
        from serving.gunicorn_app import prepare_metrics_dir

        metrics = prepare_metrics_dir()  # before any app (and its metrics) exists
    try:
        _prepare_database(config)
    except BaseException:
        if metrics is not None:
            metrics.remove()
        raise
    if workers > 0:
        from serving.gunicorn_app import run_gunicorn

        run_gunicorn(
            create_app, host=host, port=port, workers=workers, threads=threads, metrics=metrics
        )
        return
    from serving.devserver import run_development_server

    app = create_app(config)
    click.echo(
        f"modelreg serving {config.DATABASE_URL} and {config.STORAGE_URL} on "
        f"http://{host}:{port} with werkzeug's development server (Flask's; one thread per "
        "connection): for production, use --workers (gunicorn)"
    )
    run_development_server(app, host=host, port=port, config=config)


@cli.group()
def db() -> None:
    """Database schema migrations."""


def _engine() -> Any:
    from sqlalchemy import create_engine

    config = _resolve_config(None)
    _prepare_embedded_paths(config)
    engine = create_engine(config.DATABASE_URL, **engine_options(config.DATABASE_URL, config))
    tune_engine(engine)
    return engine


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply pending migrations (run this before starting production servers)."""
    engine = _engine()
    migrations.upgrade(engine, revision)
    click.echo(f"database at revision {migrations.current_revision(engine)}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION ('base' removes every table)."""
    engine = _engine()
    migrations.downgrade(engine, revision)
    click.echo(f"database at revision {migrations.current_revision(engine)}")


@db.command("current")
def db_current() -> None:
    """Show the applied and the latest revision."""
    engine = _engine()
    click.echo(
        f"current: {migrations.current_revision(engine)}  head: {migrations.head_revision()}"
    )


@cli.group()
def models() -> None:
    """Registered models."""


@models.command("list")
@click.option("--q", "search", help="Substring of the name.")
@click.option("--tag", "tags", multiple=True, help="key or key:value (repeatable).")
@click.pass_context
def models_list(ctx: click.Context, search: str | None, tags: tuple[str, ...]) -> None:
    rows = _client(ctx).list_models(q=search, tag=list(tags) or None)
    _table(rows, ["name", "latest_version", "aliases", "tags", "description"])


@cli.group()
def versions() -> None:
    """Versions of a model."""


@versions.command("list")
@click.argument("name")
@click.pass_context
def versions_list(ctx: click.Context, name: str) -> None:
    rows = _client(ctx).list_versions(name)
    _table(
        rows,
        ["version", "status", "format", "aliases", "size", "sha256", "created_by", "created_at"],
    )


@cli.command()
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["joblib", "skops", "onnx"]),
    help="Default: from the file extension.",
)
@click.option("--description", default="")
@click.option(
    "--metadata",
    type=click.File("rb"),
    help="A JSON file with tags, metrics, params, source, input_example, signature.",
)
@click.pass_context
def register(
    ctx: click.Context, name: str, file: str, fmt: str | None, description: str, metadata: Any
) -> None:
    """Register FILE as the next version of NAME."""
    import orjson

    extra = orjson.loads(metadata.read()) if metadata else {}
    extra.setdefault("description", description)
    if fmt:
        extra["format"] = fmt
    record = _client(ctx).register(name, file, **extra)
    click.echo(
        f"registered {name} version {record['version']} "
        f"(sha256 {record['sha256'][:12]}, {record['size']} bytes)"
    )


@cli.command()
@click.argument("name")
@click.argument("version", type=int)
@click.option("--alias", default="production", show_default=True)
@click.option("--reason", default="")
@click.option(
    "--expected-version",
    type=int,
    default=None,
    help="Only move the alias if it points to this version now.",
)
@click.pass_context
def promote(
    ctx: click.Context,
    name: str,
    version: int,
    alias: str,
    reason: str,
    expected_version: int | None,
) -> None:
    """Point ALIAS of NAME at VERSION, after loading and checking it."""
    options = {} if expected_version is None else {"expected_version": expected_version}
    move = _client(ctx).promote(name, version, alias=alias, reason=reason, **options)
    click.echo(f"{name}: {alias} -> {move['version']} (was {move['previous_version']})")


@cli.command()
@click.argument("name")
@click.argument("alias", default="production")
@click.option("--reason", default="")
@click.pass_context
def rollback(ctx: click.Context, name: str, alias: str, reason: str) -> None:
    """Undo the most recent promotion of ALIAS."""
    move = _client(ctx).rollback(name, alias=alias, reason=reason)
    click.echo(f"{name}: {alias} -> {move['version']} (was {move['previous_version']})")


@cli.command()
@click.argument("name")
@click.option("--limit", type=int, default=None)
@click.pass_context
def events(ctx: click.Context, name: str, limit: int | None) -> None:
    """The audit trail of NAME, newest first."""
    rows = _client(ctx).events(name, limit=limit)
    for row in rows:
        row["change"] = _change(row)
    _table(rows, ["at", "type", "version", "alias", "actor", "change", "reason"])


def _change(event: dict[str, Any]) -> str:
    before, after = event.get("before") or {}, event.get("after") or {}
    if "version" in before or "version" in after:
        return f"{before.get('version', '-')} -> {after.get('version', '-')}"
    return ""


@cli.command()
@click.option("--name", default="house-price", show_default=True)
@click.pass_context
def demo(ctx: click.Context, name: str) -> None:
    """The house-price walk-through: register, promote, predict, roll back, audit."""
    from registry.demo import run_demo

    run_demo(_client(ctx), name, echo=click.echo)


@cli.group()
def tokens() -> None:
    """API tokens, managed directly in the configured database (the bootstrap path)."""


def _uow() -> Any:
    engine = _engine()
    if _resolve_config(None).AUTO_MIGRATE:
        migrations.upgrade(engine)
    return UnitOfWorkFactory(sessionmaker(bind=engine, expire_on_commit=False))


@tokens.command("create")
@click.option("--name", required=True, help="Recorded as the actor in the audit trail.")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--model", "models", multiple=True, help="Restrict to these models (repeatable).")
@click.option("--expires-in-days", type=float, default=None)
def tokens_create(
    name: str, role: str, models: tuple[str, ...], expires_in_days: float | None
) -> None:
    """Create a token and print its secret (shown only this once)."""
    from datetime import timedelta

    secret, record = auth.create_token(
        _uow(),
        name=name,
        role=role,
        models=list(models) or None,
        expires_in=timedelta(days=expires_in_days) if expires_in_days else None,
        actor=f"cli:{getpass.getuser()}",
    )
    click.echo(secret)
    expiry = record.expires_at.isoformat() if record.expires_at else "never"
    click.echo(
        f"token '{record.name}' ({record.role}, expires {expiry}); store it now: "
        "only its hash is kept",
        err=True,
    )


@tokens.command("list")
def tokens_list() -> None:
    """List tokens (never their secrets)."""
    rows = [dataclasses.asdict(t) for t in auth.list_tokens(_uow()).items]
    for row in rows:
        row["state"] = "revoked" if row["revoked_at"] else "active"
    _table(rows, ["name", "role", "prefix", "models", "state", "expires_at", "created_by"])


@tokens.command("revoke")
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Revoke a token (every server stops accepting it within ALIAS_REFRESH_SECONDS)."""
    record = auth.revoke_token(_uow(), name)
    click.echo(f"token '{record.name}' revoked at {record.revoked_at.isoformat()}")


@cli.group()
def storage() -> None:
    """Artifact storage maintenance."""


@storage.command("gc")
@click.option(
    "--grace-minutes",
    type=float,
    default=60.0,
    show_default=True,
    help="Leave blobs younger than this (registrations finishing).",
)
@click.option("--dry-run", is_flag=True, help="Report what would be deleted, delete nothing.")
def storage_gc(grace_minutes: float, dry_run: bool) -> None:
    """Delete artifact blobs that no version references."""
    from datetime import timedelta

    from registry.services.storage_gc import collect_garbage

    config = _resolve_config(None)
    report = collect_garbage(
        _uow(),
        open_store(config.STORAGE_URL, config=config),
        dry_run=dry_run,
        grace=timedelta(minutes=grace_minutes),
    )
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"scanned {report.scanned} blobs: {verb} {len(report.deleted)} "
        f"({report.deleted_bytes} bytes); kept {report.referenced} referenced and "
        f"{report.too_recent} younger than the grace period; removed "
        f"{report.staging_removed} abandoned uploads"
    )
