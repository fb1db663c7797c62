"""`nitrotls attestation …`: inspect, verify, measure, simulate."""

from __future__ import annotations

import click

from nitrotls.cli.attestation_sim import measure, simulate


@click.group(name="attestation")
def group() -> None:
    """Parse, verify and simulate Nitro attestation documents."""


group.add_command(measure)
group.add_command(simulate)
