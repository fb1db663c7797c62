"""`nitrotls verify`."""

from __future__ import annotations

import click


@click.command(name="verify")
def command() -> None:
    """Not built yet: see the open issues."""
    raise click.ClickException("'nitrotls verify' is not built yet")
