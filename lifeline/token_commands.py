"""``lifeline tokens``: create and list the API tokens of the viewer (kept as SHA-256 digests in a TOML file)."""

from __future__ import annotations

from pathlib import Path

import click

from twin.errors import LifelineError


@click.group("tokens")
def tokens() -> None:
    """API tokens for 'lifeline serve' (roles: viewer, operator, emergency, admin)."""


@tokens.command("create")
@click.option("--name", required=True, help="Who holds it, e.g. ops-centre-1 or a person's login.")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator", "emergency", "admin"]),
    required=True,
    help="viewer reads; operator and emergency also act on alerts; operator runs drills; admin reads the audit log.",
)
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Tokens file.")
def create(name: str, role: str, path: Path) -> None:
    """Create a token, store its digest in FILE (mode 0600) and print the token once."""
    from viewer.auth import Role, add_token

    try:
        token = add_token(path, name=name, role=Role(role))
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"token for {name} ({role}) added to {path}; it is shown only now:", err=True)
    click.echo(token)


@tokens.command("list")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
def list_tokens(path: Path) -> None:
    """List the names and roles in FILE (the tokens themselves are not stored)."""
    from viewer.auth import read_tokens

    try:
        entries = read_tokens(path)
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    for entry in entries:
        click.echo(f"{entry.name}\t{entry.role.value}\t{entry.sha256[:12]}…")
