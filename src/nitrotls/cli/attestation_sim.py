"""`nitrotls attestation measure` and `simulate`: documents from the simulated NSM."""

from __future__ import annotations

import click


@click.command(name="measure")
def measure() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")


@click.command(name="simulate")
def simulate() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
