"""The `modelreg` command line, built around an app factory so that nothing here imports the
composition root (manage.py passes its `create_app`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from registry.cli_support import APP_FACTORY


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


def build_cli(create_app: Callable[..., Any]) -> click.Group:
    """The root `modelreg` command; `create_app(config)` builds the app it serves or embeds."""
    from registry import cli_models, cli_monitor, cli_ops, cli_policy, cli_webhooks

    @click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
    @click.option(
        "--url", envvar="MODELREG_URL", help="A running server; default: the embedded database."
    )
    @click.option("--token", envvar="MODELREG_TOKEN", help="Bearer token for --url.")
    @click.version_option(package_name="modelreg")
    @click.pass_context
    def cli(ctx: click.Context, url: str | None, token: str | None) -> None:
        """modelreg: a model registry and multi-model serving platform.

        Commands act on the server given by --url (or MODELREG_URL, with --token or
        MODELREG_TOKEN), else on the embedded database and artifact folder in the home
        folder (INSTANCE_PATH, else MODELREG_HOME, else the per-user data folder); each
        says which on stderr, and `modelreg info` shows it.
        """
        from registry.logs import configure_logging

        ctx.meta[APP_FACTORY] = create_app
        # Commands other than `serve` talk to people: plain text, warnings and up.
        configure_logging(
            os.environ.get("LOG_LEVEL", "WARNING"), os.environ.get("LOG_FORMAT", "text")
        )

    for command in [
        *cli_ops.COMMANDS,
        *cli_models.COMMANDS,
        *cli_webhooks.COMMANDS,
        *cli_monitor.COMMANDS,
        *cli_policy.COMMANDS,
    ]:
        cli.add_command(command)
    return cli
