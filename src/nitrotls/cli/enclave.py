"""`nitrotls enclave …` commands."""

from __future__ import annotations

import click


@click.group(name="enclave")
def group() -> None:
    """enclave commands (see docs/)."""
