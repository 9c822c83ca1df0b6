"""`modelreg` commands on models, versions and aliases, all through the Python client."""

from __future__ import annotations

from typing import Any

import click
import orjson

from registry.cli_support import (
    client,
    emit_json,
    json_option,
    json_value,
    remote_options,
    table,
)


@click.group()
def models() -> None:
    """Registered models."""


@models.command("list")
@click.option("--search", "search", help="Only models whose name contains this text.")
@click.option("--q", "search", hidden=True)  # the old spelling, still accepted
@click.option("--tag", "tags", multiple=True, help="key or key:value (repeatable).")
@json_option
@remote_options
@click.pass_context
def models_list(
    ctx: click.Context, search: str | None, tags: tuple[str, ...], as_json: bool
) -> None:
    """List registered models, with their latest version and aliases."""
    rows = client(ctx).list_models(q=search, tag=list(tags) or None)
    if as_json:
        emit_json(rows)
        return
    table(rows, ["name", "latest_version", "aliases", "tags", "description"])


@click.group()
def versions() -> None:
    """Versions of a model."""


@versions.command("list")
@click.argument("name")
@click.option("--status", type=click.Choice(["ready", "archived"]), help="Only these.")
@json_option
@remote_options
@click.pass_context
def versions_list(ctx: click.Context, name: str, status: str | None, as_json: bool) -> None:
    """List the versions of NAME with their metrics and description."""
    rows = client(ctx).list_versions(name, status=status)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        row["sha256"] = str(row.get("sha256", ""))[:12]
    table(
        rows,
        ["version", "status", "format", "aliases", "metrics", "description", "sha256",
         "created_by", "created_at"],
    )  # fmt: skip


@click.command()
@click.argument("name")
@click.argument("file", type=click.Path(exists=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["joblib", "skops", "onnx", "xgboost", "lightgbm", "mlflow"]),
    help="Default: from the file extension. A directory is an MLflow model (MLmodel file).",
)
@click.option("--description", default=None)
@click.option(
    "--input-example",
    help="Rows the model must predict before a promotion: inline JSON or a JSON file.",
)
@click.option(
    "--metadata",
    type=click.File("rb"),
    help="A JSON file with tags, metrics, params, source, input_example, signature.",
)
@click.option(
    "--accelerate",
    type=click.Choice(["auto", "off", "float32"]),
    default=None,
    help="auto (default): the fastest verified form, float64 where one exists; off: the "
    "library's own predict; float32: prefer a float32 form (faster trees on many rows, "
    "answers within the tolerance).",
)
@remote_options
@click.pass_context
def register(
    ctx: click.Context,
    name: str,
    file: str,
    fmt: str | None,
    description: str | None,
    input_example: str | None,
    metadata: Any,
    accelerate: str | None,
) -> None:
    """Register FILE (a model file, or an MLflow model directory or archive) as the next
    version of NAME."""
    extra = _metadata(metadata.read()) if metadata else {}
    if not isinstance(extra, dict):
        raise click.BadParameter("must hold a JSON object", param_hint="--metadata")
    if description is not None:
        extra["description"] = description
    if input_example is not None:
        extra["input_example"] = json_value(input_example, "--input-example")
    if fmt:
        extra["format"] = fmt
    if accelerate is not None:
        extra["accelerate"] = {"auto": True, "off": False}.get(accelerate, accelerate)
    record = client(ctx).register(name, file, **extra)
    click.echo(
        f"registered {name} version {record['version']} "
        f"(sha256 {record['sha256'][:12]}, {record['size']} bytes)"
    )


def _metadata(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise click.BadParameter(f"not valid JSON ({error})", param_hint="--metadata") from None


@click.command()
@click.argument("name")
@click.argument("ref", default="latest")
@json_option
@remote_options
@click.pass_context
def show(ctx: click.Context, name: str, ref: str, as_json: bool) -> None:
    """Show version REF of NAME (a number, an alias or latest)."""
    record = client(ctx).get_version(name, ref)
    if as_json:
        emit_json(record)
        return
    for key in ("name", "version", "status", "format", "description", "aliases", "sha256",
                "size", "metrics", "params", "tags", "source", "signature", "input_example",
                "created_by", "created_at"):  # fmt: skip
        value = record.get(key)
        if value in (None, "", {}, []):
            text = "-"
        elif isinstance(value, dict | list):
            text = orjson.dumps(value).decode()
        else:
            text = str(value)
        click.echo(f"{key + ':':<15}{text}")


@click.command()
@click.argument("name")
@click.argument("ref", default="latest")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    default=".",
    show_default=True,
    help="A file, or a folder to save it in under the server's file name.",
)
@remote_options
@click.pass_context
def download(ctx: click.Context, name: str, ref: str, output: str) -> None:
    """Download the artifact of version REF of NAME, verified against its sha256."""
    api = client(ctx)
    record = api.get_version(name, ref)
    path = api.download(name, record["version"], output)
    click.echo(f"saved {name} version {record['version']} to {path} (sha256 {record['sha256']})")


@click.command()
@click.argument("name")
@click.argument("ref")
@click.argument("rows")
@click.option(
    "--method", type=click.Choice(["predict", "predict_proba"]), default="predict",
    show_default=True,
)  # fmt: skip
@remote_options
@click.pass_context
def predict(ctx: click.Context, name: str, ref: str, rows: str, method: str) -> None:
    """Predict ROWS (inline JSON or a JSON file: a list of rows, or columns as an object)
    with version REF of NAME, and print the answer as JSON."""
    emit_json(client(ctx).predict(name, ref, json_value(rows, "ROWS"), method=method))


@click.command()
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
@remote_options
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
    move = client(ctx).promote(name, version, alias=alias, reason=reason, **options)
    click.echo(f"{name}: {alias} -> {move['version']} (was {move['previous_version']})")


@click.command()
@click.argument("name")
@click.argument("alias", default="production")
@click.option("--reason", default="")
@remote_options
@click.pass_context
def rollback(ctx: click.Context, name: str, alias: str, reason: str) -> None:
    """Undo the most recent promotion of ALIAS."""
    move = client(ctx).rollback(name, alias=alias, reason=reason)
    click.echo(f"{name}: {alias} -> {move['version']} (was {move['previous_version']})")


@click.command()
@click.argument("name")
@click.argument("version", type=int)
@click.option("--reason", default="")
@remote_options
@click.pass_context
def archive(ctx: click.Context, name: str, version: int, reason: str) -> None:
    """Archive VERSION of NAME: still servable by number, no longer `latest`."""
    record = client(ctx).archive(name, version, reason=reason)
    click.echo(f"{name} version {record['version']} is {record['status']}")


@click.command()
@click.argument("name")
@click.argument("version", type=int, required=False)
@click.option("--reason", default="")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@remote_options
@click.pass_context
def delete(ctx: click.Context, name: str, version: int | None, reason: str, yes: bool) -> None:
    """Delete VERSION of NAME, or the whole model without VERSION (409 while aliased)."""
    what = f"{name} version {version}" if version is not None else f"model {name} (every version)"
    if not yes:
        click.confirm(f"Delete {what}?", abort=True)
    api = client(ctx)
    if version is None:
        api.delete_model(name, reason=reason)
    else:
        api.delete_version(name, version, reason=reason)
    click.echo(f"deleted {what}")


@click.command()
@click.argument("name")
@json_option
@remote_options
@click.pass_context
def aliases(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the aliases of NAME and the versions they point to."""
    mapping = client(ctx).aliases(name)
    if as_json:
        emit_json(mapping)
        return
    table([{"alias": a, "version": v} for a, v in mapping.items()], ["alias", "version"])


@click.command()
@click.argument("name")
@click.option("--limit", type=int, default=None)
@json_option
@remote_options
@click.pass_context
def events(ctx: click.Context, name: str, limit: int | None, as_json: bool) -> None:
    """The audit trail of NAME, newest first."""
    rows = client(ctx).events(name, limit=limit)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        row["change"] = _change(row)
    table(rows, ["at", "type", "version", "alias", "actor", "change", "reason"])


def _change(event: dict[str, Any]) -> str:
    before, after = event.get("before") or {}, event.get("after") or {}
    if "version" in before or "version" in after:
        return f"{before.get('version', '-')} -> {after.get('version', '-')}"
    return ""


@click.command()
@click.option("--name", default="house-price", show_default=True)
@remote_options
@click.pass_context
def demo(ctx: click.Context, name: str) -> None:
    """The house-price walk-through: register, promote, predict, roll back, audit."""
    from registry.demo import run_demo

    run_demo(client(ctx), name, echo=click.echo)


COMMANDS = [models, versions, register, show, download, predict, promote, rollback, archive,
            delete, aliases, events, demo]  # fmt: skip
