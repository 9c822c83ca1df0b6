"""`modelreg policy ...`: traffic policies on an alias (A/B/n, sticky units, shadows)."""

from __future__ import annotations

from typing import Any

import click

from registry.cli_support import client, emit_json, remote_options


@click.group()
def policy() -> None:
    """Traffic policies on an alias: weighted variants, sticky units and shadows
    (see docs/policies.md)."""


def _pairs(values: tuple[str, ...], what: str) -> dict[int, float]:
    """VERSION=NUMBER pairs, e.g. 3=90 4=10."""
    pairs: dict[int, float] = {}
    for value in values:
        version, sep, number = value.partition("=")
        try:
            if not sep:
                raise ValueError
            pairs[int(version)] = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected VERSION={what}") from None
    return pairs


@policy.command("set")
@click.argument("name")
@click.argument("alias")
@click.argument("variants", nargs=-1, required=True, metavar="VERSION=WEIGHT...")
@click.option("--sticky-header", help="Keep each unit on one version by this header's value.")
@click.option("--sticky-field", help="... or by this input field of the first row.")
@click.option(
    "--shadow",
    "shadows",
    multiple=True,
    metavar="VERSION=SAMPLE",
    help="Send a sampled copy (0..1] to this version; repeatable.",
)
@click.option("--reason", default="")
@click.option("--expected-revision", type=int, help="Refuse if the policy changed meanwhile.")
@remote_options
@click.pass_context
def policy_set(
    ctx: click.Context,
    name: str,
    alias: str,
    variants: tuple[str, ...],
    sticky_header: str | None,
    sticky_field: str | None,
    shadows: tuple[str, ...],
    reason: str,
    expected_revision: int | None,
) -> None:
    """Route ALIAS's traffic, e.g. `modelreg policy set price production 3=90 4=10
    --sticky-header X-Unit-Id`. The alias's version must be one of the variants."""
    if sticky_header and sticky_field:
        raise click.UsageError("give --sticky-header or --sticky-field, not both")
    sticky: dict[str, Any] | None = None
    if sticky_header:
        sticky = {"header": sticky_header}
    elif sticky_field:
        sticky = {"field": sticky_field}
    emit_json(
        client(ctx).set_policy(
            name,
            alias,
            _pairs(variants, "WEIGHT"),
            sticky=sticky,
            shadows=_pairs(shadows, "SAMPLE"),
            reason=reason,
            expected_revision=expected_revision,
        )
    )


@policy.command("show")
@click.argument("name")
@click.argument("alias", default="production")
@remote_options
@click.pass_context
def policy_show(ctx: click.Context, name: str, alias: str) -> None:
    """The alias's policy, as JSON (`state` none when it has none)."""
    emit_json(client(ctx).get_policy(name, alias))


@policy.command("clear")
@click.argument("name")
@click.argument("alias", default="production")
@click.option("--reason", default="")
@click.option("--expected-revision", type=int)
@remote_options
@click.pass_context
def policy_clear(
    ctx: click.Context, name: str, alias: str, reason: str, expected_revision: int | None
) -> None:
    """All of the alias's traffic back to its version."""
    emit_json(client(ctx).clear_policy(name, alias, reason, expected_revision))


@policy.command("stats")
@click.argument("name")
@click.argument("alias", default="production")
@remote_options
@click.pass_context
def policy_stats(ctx: click.Context, name: str, alias: str) -> None:
    """Per-variant counters of the serving process that answers, as JSON."""
    emit_json(client(ctx).policy_stats(name, alias))


COMMANDS = [policy]
