"""What every `modelreg` command shares: which registry it acts on, and how it prints.

A command acts either on a running server (`--url`, before or after the subcommand, or
MODELREG_URL) or on the embedded default (the database and store of `load_config()`, which
never depend on the current directory). Each command says which, once, on stderr, so the
answer on stdout stays clean for scripts.
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from config import Config, load_config

APP_FACTORY = "modelreg.app_factory"  # the `create_app` the root command was built with
_URL = "modelreg.url"
_TOKEN = "modelreg.token"
_ANNOUNCED = "modelreg.announced"

F = TypeVar("F", bound=Callable[..., Any])


# ---- where a command acts ----------------------------------------------------------------


def server_url(ctx: click.Context) -> str | None:
    """The server given by --url (after the subcommand wins over before it) or MODELREG_URL."""
    return ctx.meta.get(_URL) or ctx.find_root().params.get("url") or None


def server_token(ctx: click.Context) -> str | None:
    return ctx.meta.get(_TOKEN) or ctx.find_root().params.get("token") or None


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value:
            ctx.meta[key] = value

    return callback


def remote_options(command: F) -> F:
    """`--url` and `--token` accepted after the subcommand too (`modelreg models list --url`)."""
    command = click.option(
        "--token",
        expose_value=False,
        callback=_remember(_TOKEN),
        help="Bearer token for --url (or MODELREG_TOKEN).",
    )(command)
    return click.option(
        "--url",
        expose_value=False,
        callback=_remember(_URL),
        help="A running server (or MODELREG_URL); default: the embedded database.",
    )(command)


def announce(ctx: click.Context, where: str) -> None:
    """One line on stderr naming what this command acts on (once per command)."""
    if not ctx.meta.get(_ANNOUNCED):
        ctx.meta[_ANNOUNCED] = True
        click.echo(f"modelreg: {where}", err=True)


def local_config() -> Config:
    return load_config()


def describe_local(config: Config) -> str:
    """The embedded database and store, with any password in the URL hidden."""
    from sqlalchemy.engine import make_url

    database = make_url(config.DATABASE_URL).render_as_string(hide_password=True)
    return f"database {database}, artifacts {config.STORAGE_URL}"


def client(ctx: click.Context) -> Any:
    """A client for the server, or one running in-process on the embedded default."""
    from registry.client import Client

    url = server_url(ctx)
    if url:
        announce(ctx, f"server {url}")
        return Client(url, token=server_token(ctx))
    # In-process on the local database: whoever can open the database file already holds
    # every right, so the embedded client acts as a local admin named after the OS user.
    # A command is short-lived: the webhook outbox is the server's to send.
    config = dataclasses.replace(
        local_config(),
        AUTH_DISABLED=True,
        LOCAL_ACTOR=f"cli:{getpass.getuser()}",
        WEBHOOK_DISPATCH=False,
    )
    announce(ctx, describe_local(config))
    logging.getLogger("registry.access").setLevel(logging.ERROR)
    create_app = ctx.find_root().meta[APP_FACTORY]
    return Client.for_app(create_app(config))


def local_engine(ctx: click.Context) -> Any:
    """An engine on the embedded (or configured) database, for commands that need SQL."""
    from sqlalchemy import create_engine

    from registry.db import engine_options, tune_engine

    config = local_config()
    announce(ctx, describe_local(config))
    _prepare_sqlite_folder(config.DATABASE_URL)
    engine = create_engine(config.DATABASE_URL, **engine_options(config.DATABASE_URL, config))
    tune_engine(engine)
    return engine


def local_uow(ctx: click.Context) -> Any:
    from sqlalchemy.orm import sessionmaker

    import migrations
    from registry.unit_of_work import UnitOfWorkFactory

    engine = local_engine(ctx)
    if local_config().AUTO_MIGRATE:
        migrations.upgrade(engine)
    return UnitOfWorkFactory(sessionmaker(bind=engine, expire_on_commit=False))


def _prepare_sqlite_folder(database_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


# ---- input -------------------------------------------------------------------------------


def json_value(raw: str, option: str) -> Any:
    """Inline JSON, or the JSON in the file it names (`rows.json` or `@rows.json`)."""
    text: str | bytes = raw
    if raw.startswith("@") or _names_a_file(raw):
        path = Path(raw.removeprefix("@"))
        try:
            text = path.read_bytes()
        except OSError as error:
            raise click.BadParameter(
                f"cannot read {path}: {error.strerror}", param_hint=option
            ) from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise click.BadParameter(
            f"neither a JSON file nor valid JSON ({error})", param_hint=option
        ) from None


def _names_a_file(raw: str) -> bool:
    if raw.lstrip().startswith(("[", "{")):
        return False
    try:
        return Path(raw).is_file()
    except (OSError, ValueError):  # too long, or a NUL: not a file name
        return False


# ---- output ------------------------------------------------------------------------------


def emit_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, not a table.")


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)
