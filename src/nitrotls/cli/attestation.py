"""`nitrotls attestation …` commands."""

from __future__ import annotations

import click


@click.group(name="attestation")
def group() -> None:
    """attestation commands (see docs/)."""
