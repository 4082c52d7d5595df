"""Flask CLI commands (`flask --app app seed`, `flask --app app create-editor`, ...)."""

from __future__ import annotations

import click
from flask import Flask


@click.command("create-editor")
@click.argument("username")
@click.option("--display-name", help="Shown on posts (default: the username; kept when promoting).")
@click.password_option("--password", prompt="Password", help="Read from the terminal or stdin when omitted.")
def create_editor_command(username: str, display_name: str | None, password: str) -> None:
    """Create the editor USERNAME, or promote an existing author and set the password."""
    from app.services.auth import AccountError, make_editor

    try:
        author, created = make_editor(username, password, display_name)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'Created' if created else 'Promoted'} editor '{author.username}' (id {author.id}).")


def register_cli(app: Flask) -> None:
    from app.services.seed import seed_command

    app.cli.add_command(seed_command)
    app.cli.add_command(create_editor_command)
