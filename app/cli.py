"""Flask CLI commands (`flask --app app seed`, `flask --app app create-editor`, ...)."""

from __future__ import annotations

import os
import sys

import click
from flask import Flask
from flask.cli import with_appcontext

PASSWORD_ENV = "EDITOR_PASSWORD"


def _read_password() -> str:
    """The new password: EDITOR_PASSWORD if set, else the first line of piped stdin, else a
    hidden prompt with confirmation (never an argument: it would land in shell history)."""
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():  # piped: one line, no confirmation (there is nobody to mistype)
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.ClickException(f"no password on stdin (pipe one line, or set {PASSWORD_ENV})")
        return password
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.command("create-editor")
@click.argument("username")
@click.option("--display-name", help="Shown on posts (default: the username; kept when promoting).")
@with_appcontext
def create_editor_command(username: str, display_name: str | None) -> None:
    """Create the editor USERNAME, or promote an existing author and set the password.

    The password comes from EDITOR_PASSWORD, else from one line of piped stdin
    (`echo 'pw-at-least-8' | flask --app app create-editor ada`), else a hidden prompt asked twice.
    """
    from app.services.auth import AccountError, make_editor

    password = _read_password()
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
