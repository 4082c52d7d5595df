"""Flask CLI commands (`flask --app app seed`, `flask --app app create-editor`, ...)."""

from __future__ import annotations

import sys

import click
from flask import Flask
from flask.cli import with_appcontext


@click.command("create-editor")
@click.argument("username")
@click.option("--display-name", help="Shown on posts (default: the username; kept when promoting).")
@with_appcontext
def create_editor_command(username: str, display_name: str | None) -> None:
    """Create the editor USERNAME, or promote an existing author and set the password.

    The password is prompted for twice (never an argument: it would land in shell history);
    piped stdin works too, e.g. `printf 'pw\\npw\\n' | flask create-editor ada`.
    """
    from app.services.auth import AccountError, make_editor

    # getpass reads /dev/tty even when stdin is a pipe, so hide input only on a terminal.
    password = click.prompt("Password", hide_input=sys.stdin.isatty(), confirmation_prompt=True)
    try:
        author, created = make_editor(username, password, display_name)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'Created' if created else 'Promoted'} editor '{author.username}' (id {author.id}).")


@click.command("purge-idempotency-keys")
@with_appcontext
def purge_idempotency_keys_command() -> None:
    """Delete expired idempotency keys (gunicorn workers do it every IDEMPOTENCY_SWEEP_INTERVAL s)."""
    from app.services.idempotency import purge_expired

    click.echo(f"Deleted {purge_expired()} expired idempotency keys.")


def register_cli(app: Flask) -> None:
    from app.seed import seed_command

    app.cli.add_command(seed_command)
    app.cli.add_command(create_editor_command)
    app.cli.add_command(purge_idempotency_keys_command)
