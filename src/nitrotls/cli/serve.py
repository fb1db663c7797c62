"""`nitrotls serve`."""

from __future__ import annotations

import click


@click.command(name="serve")
def command() -> None:
    """Not built yet: see the open issues."""
    raise click.ClickException("'nitrotls serve' is not built yet")
