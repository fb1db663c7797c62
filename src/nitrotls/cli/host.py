"""`nitrotls host …` commands."""

from __future__ import annotations

import click


@click.group(name="host")
def group() -> None:
    """host commands (see docs/)."""
