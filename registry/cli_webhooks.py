"""`modelreg webhooks ...`: subscriptions and their delivery log (admin)."""

from __future__ import annotations

import click

from registry.cli_support import client, emit_json, json_option, remote_options, table


@click.group()
def webhooks() -> None:
    """Webhook subscriptions: registry changes announced over HTTP, signed (Standard
    Webhooks), retried, with a delivery log."""


@webhooks.command("create")
@click.argument("target", metavar="URL")
@click.option(
    "--event",
    "events",
    multiple=True,
    help="An event type, a family (version.*) or * (repeatable; default *).",
)
@click.option("--model", "models", multiple=True, help="Only changes of this model (repeatable).")
@click.option("--description", default="")
@json_option
@remote_options
@click.pass_context
def webhooks_create(
    ctx: click.Context,
    target: str,
    events: tuple[str, ...],
    models: tuple[str, ...],
    description: str,
    as_json: bool,
) -> None:
    """Subscribe URL; prints the signing secret, shown only this once."""
    created = client(ctx).create_webhook(
        target, events or ("*",), list(models) or None, description
    )
    if as_json:
        emit_json(created)
        return
    click.echo(f"webhook {created['id']} -> {created['url']} ({', '.join(created['events'])})")
    click.echo(f"signing secret (shown once): {created['secret']}")


@webhooks.command("list")
@json_option
@remote_options
@click.pass_context
def webhooks_list(ctx: click.Context, as_json: bool) -> None:
    """List subscriptions (never their secrets)."""
    rows = client(ctx).list_webhooks()
    if as_json:
        emit_json(rows)
        return
    table(rows, ["id", "url", "events", "models", "enabled", "description"])


@webhooks.command("show")
@click.argument("webhook_id", type=int)
@remote_options
@click.pass_context
def webhooks_show(ctx: click.Context, webhook_id: int) -> None:
    """One subscription, as JSON."""
    emit_json(client(ctx).get_webhook(webhook_id))


@webhooks.command("disable")
@click.argument("webhook_id", type=int)
@remote_options
@click.pass_context
def webhooks_disable(ctx: click.Context, webhook_id: int) -> None:
    """Stop new deliveries (pending ones wait until it is enabled again)."""
    client(ctx).update_webhook(webhook_id, enabled=False)
    click.echo(f"webhook {webhook_id} disabled")


@webhooks.command("enable")
@click.argument("webhook_id", type=int)
@remote_options
@click.pass_context
def webhooks_enable(ctx: click.Context, webhook_id: int) -> None:
    client(ctx).update_webhook(webhook_id, enabled=True)
    click.echo(f"webhook {webhook_id} enabled")


@webhooks.command("rotate-secret")
@click.argument("webhook_id", type=int)
@remote_options
@click.pass_context
def webhooks_rotate(ctx: click.Context, webhook_id: int) -> None:
    """A new signing secret; the old one also signs during WEBHOOK_SECRET_GRACE_SECONDS."""
    rotated = client(ctx).rotate_webhook_secret(webhook_id)
    click.echo(f"new signing secret (shown once): {rotated['secret']}")
    click.echo(f"the previous secret also signs until {rotated['secret_rotated_until']}")


@webhooks.command("delete")
@click.argument("webhook_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@remote_options
@click.pass_context
def webhooks_delete(ctx: click.Context, webhook_id: int, yes: bool) -> None:
    """Delete a subscription and its delivery log."""
    if not yes:
        click.confirm(f"delete webhook {webhook_id} and its delivery log?", abort=True)
    client(ctx).delete_webhook(webhook_id)
    click.echo(f"webhook {webhook_id} deleted")


@webhooks.command("test")
@click.argument("webhook_id", type=int)
@remote_options
@click.pass_context
def webhooks_test(ctx: click.Context, webhook_id: int) -> None:
    """Send a webhook.test event now and print what the receiver answered."""
    delivery = client(ctx).test_webhook(webhook_id)
    attempts = delivery.get("attempt_log") or []
    if not attempts:
        click.echo(f"delivery {delivery['id']} queued behind one in flight")
        return
    last = attempts[-1]
    outcome = last["status_code"] if last["status_code"] is not None else last["error"]
    click.echo(
        f"delivery {delivery['id']}: {delivery['status']} ({outcome}, {last['latency_ms']:.0f} ms)"
    )
    if delivery["status"] != "delivered":
        raise SystemExit(1)


@webhooks.command("deliveries")
@click.argument("webhook_id", type=int)
@click.option("--status", type=click.Choice(["pending", "delivered", "failed"]))
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@remote_options
@click.pass_context
def webhooks_deliveries(
    ctx: click.Context, webhook_id: int, status: str | None, limit: int, as_json: bool
) -> None:
    """The delivery log, newest first."""
    rows = client(ctx).webhook_deliveries(webhook_id, status=status, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table(
        rows,
        ["id", "event_type", "status", "attempts", "last_status_code", "last_error",
         "created_at"],
    )  # fmt: skip


@webhooks.command("retry")
@click.argument("webhook_id", type=int)
@click.argument("delivery_id", type=int)
@remote_options
@click.pass_context
def webhooks_retry(ctx: click.Context, webhook_id: int, delivery_id: int) -> None:
    """Send a delivery again (same webhook-id; a fresh retry window)."""
    client(ctx).retry_webhook_delivery(webhook_id, delivery_id)
    click.echo(f"delivery {delivery_id} queued again")


COMMANDS = [webhooks]
