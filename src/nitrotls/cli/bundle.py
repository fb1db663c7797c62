"""`nitrotls bundle …` commands."""

from __future__ import annotations

import click


@click.group(name="bundle")
def group() -> None:
    """bundle commands (see docs/)."""
