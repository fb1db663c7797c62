"""`nitrotls kms …` commands."""

from __future__ import annotations

import click


@click.group(name="kms")
def group() -> None:
    """kms commands (see docs/)."""
