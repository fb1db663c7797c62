"""`nitrotls demo`."""

from __future__ import annotations

import click


@click.command(name="demo")
def command() -> None:
    """Not built yet: see the open issues."""
    raise click.ClickException("'nitrotls demo' is not built yet")
