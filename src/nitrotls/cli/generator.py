"""`nitrotls generator …` commands."""

from __future__ import annotations

import click


@click.group(name="generator")
def group() -> None:
    """generator commands (see docs/)."""
