"""`modelreg` commands for operators: serve, info, database migrations, tokens, storage."""

from __future__ import annotations

import dataclasses
import getpass
from datetime import timedelta
from typing import Any

import click

from config import instance_source
from registry.auth import ROLES
from registry.cli_support import (
    APP_FACTORY,
    announce,
    client,
    describe_local,
    emit_json,
    json_option,
    local_config,
    local_engine,
    local_uow,
    remote_options,
    server_url,
    table,
)

DEFAULT_PORT = 8080


def _prepare_database(ctx: click.Context, config: Any) -> None:
    """Migrate once, before any worker starts, and warn when no token can get in."""
    from sqlalchemy.orm import sessionmaker

    import migrations
    from registry import auth
    from registry.unit_of_work import UnitOfWorkFactory

    engine = local_engine(ctx)
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


@click.command()
@click.option(
    "--host",
    envvar="MODELREG_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (or MODELREG_HOST).",
)
@click.option(
    "--port",
    envvar=["MODELREG_PORT", "PORT"],
    default=DEFAULT_PORT,
    type=int,
    show_default=True,
    help="Port to listen on (or MODELREG_PORT, then PORT).",
)
@click.option(
    "--workers",
    type=int,
    default=0,
    help="Run gunicorn with this many worker processes (production server).",
)
@click.option(
    "--threads", type=int, default=4, show_default=True, help="Threads per gunicorn worker."
)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int, threads: int) -> None:
    """Start the HTTP service (development server unless --workers is given). Ctrl-C stops it."""
    from registry.logs import configure_logging

    create_app = ctx.meta[APP_FACTORY]
    config = local_config()
    configure_logging(config.LOG_LEVEL, config.LOG_FORMAT)
    metrics = None
    if workers > 0:
        from serving.gunicorn_app import prepare_metrics_dir

        metrics = prepare_metrics_dir()  # before any app (and its metrics) exists
    try:
        _prepare_database(ctx, config)
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
        f"modelreg serving {describe_local(config)} on http://{host}:{port} with werkzeug's "
        "development server (Flask's; one thread per connection): for production, use "
        "--workers (gunicorn). Ctrl-C stops it."
    )
    run_development_server(app, host=host, port=port, config=config)


@click.command()
@json_option
@remote_options
@click.pass_context
def info(ctx: click.Context, as_json: bool) -> None:
    """Say what the other commands act on: a server (--url) or the embedded home."""
    from sqlalchemy.engine import make_url

    config = local_config()
    url = server_url(ctx)
    facts: dict[str, Any] = {
        "server": url,
        "home": config.INSTANCE_PATH,
        "home_from": instance_source(),
        "database": make_url(config.DATABASE_URL).render_as_string(hide_password=True),
        "storage": config.STORAGE_URL,
    }
    if url:
        facts["server_health"] = client(ctx).health().get("status")
    if as_json:
        emit_json(facts)
        return
    if url:
        click.echo(f"server:   {url} (--url or MODELREG_URL): commands act on it")
    else:
        click.echo("server:   none given (--url or MODELREG_URL): commands act on the home below")
    click.echo(f"home:     {facts['home']} (from {facts['home_from']})")
    click.echo(f"database: {facts['database']}")
    click.echo(f"storage:  {facts['storage']}")


@click.group()
def db() -> None:
    """Database schema migrations (on the configured database)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply pending migrations (run this before starting production servers)."""
    import migrations

    engine = local_engine(ctx)
    migrations.upgrade(engine, revision)
    click.echo(f"database at revision {migrations.current_revision(engine)}")


@db.command("downgrade")
@click.argument("revision")
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str) -> None:
    """Revert migrations down to REVISION ('base' removes every table)."""
    import migrations

    engine = local_engine(ctx)
    migrations.downgrade(engine, revision)
    click.echo(f"database at revision {migrations.current_revision(engine)}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Show the applied and the latest revision."""
    import migrations

    engine = local_engine(ctx)
    click.echo(
        f"current: {migrations.current_revision(engine)}  head: {migrations.head_revision()}"
    )


@click.group()
def tokens() -> None:
    """API tokens: through the server with --url, else directly in the configured database
    (the bootstrap path, for whoever can open it)."""


@tokens.command("create")
@click.option("--name", required=True, help="Recorded as the actor in the audit trail.")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--model", "models", multiple=True, help="Restrict to these models (repeatable).")
@click.option("--expires-in-days", type=float, default=None)
@remote_options
@click.pass_context
def tokens_create(
    ctx: click.Context,
    name: str,
    role: str,
    models: tuple[str, ...],
    expires_in_days: float | None,
) -> None:
    """Create a token and print its secret (shown only this once)."""
    if server_url(ctx):
        answer = client(ctx).create_token(
            name, role, models=list(models) or None, expires_in_days=expires_in_days
        )
        secret, role, expiry = answer["token"], answer["role"], answer.get("expires_at")
    else:
        from registry import auth

        secret, record = auth.create_token(
            local_uow(ctx),
            name=name,
            role=role,
            models=list(models) or None,
            expires_in=timedelta(days=expires_in_days) if expires_in_days else None,
            actor=f"cli:{getpass.getuser()}",
        )
        expiry = record.expires_at.isoformat() if record.expires_at else None
    click.echo(secret)
    click.echo(
        f"token '{name}' ({role}, expires {expiry or 'never'}); store it now: "
        "only its hash is kept",
        err=True,
    )


@tokens.command("list")
@json_option
@remote_options
@click.pass_context
def tokens_list(ctx: click.Context, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    if server_url(ctx):
        rows = client(ctx).list_tokens()
    else:
        from registry import auth

        rows = [dataclasses.asdict(t) for t in auth.list_tokens(local_uow(ctx)).items]
        for row in rows:
            for key in ("created_at", "expires_at", "revoked_at"):
                row[key] = row[key].isoformat() if row.get(key) else None
    for row in rows:
        row["state"] = "revoked" if row.get("revoked_at") else "active"
    if as_json:
        emit_json(rows)
        return
    table(rows, ["name", "role", "prefix", "models", "state", "expires_at", "created_by"])


@tokens.command("revoke")
@click.argument("name")
@remote_options
@click.pass_context
def tokens_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a token (every server stops accepting it within ALIAS_REFRESH_SECONDS)."""
    if server_url(ctx):
        revoked_at = client(ctx).revoke_token(name)["revoked_at"]
    else:
        from registry import auth

        revoked_at = auth.revoke_token(local_uow(ctx), name).revoked_at.isoformat()
    click.echo(f"token '{name}' revoked at {revoked_at}")


@click.group()
def storage() -> None:
    """Artifact storage maintenance (on the configured database and store)."""


@storage.command("gc")
@click.option(
    "--grace-minutes",
    type=float,
    default=60.0,
    show_default=True,
    help="Leave blobs younger than this (registrations finishing).",
)
@click.option("--dry-run", is_flag=True, help="Report what would be deleted, delete nothing.")
@click.pass_context
def storage_gc(ctx: click.Context, grace_minutes: float, dry_run: bool) -> None:
    """Delete artifact blobs that no version references."""
    from registry.services.storage_gc import collect_garbage
    from storage import open_store

    config = local_config()
    announce(ctx, describe_local(config))
    report = collect_garbage(
        local_uow(ctx),
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


COMMANDS = [serve, info, db, tokens, storage]
