"""The ``nitrotls`` command: parse, call the library, print. No business logic lives here."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nitrotls import __version__, home
from nitrotls.cli import (
    attestation,
    bundle,
    demo,
    enclave,
    generator,
    host,
    kms,
    serve,
    verify,
)
from nitrotls.cli.output import run_guarded


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nitrotls")
@click.option(
    "--home",
    "home_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory (default: $NITROTLS_HOME, else the platform's user data dir).",
)
def cli(home_dir: Path | None) -> None:
    """CA-signed TLS for AWS Nitro Enclaves: keys born and kept inside attested enclaves."""
    if home_dir is not None:
        home.set_home(home_dir)


cli.add_command(attestation.group)
cli.add_command(kms.group)
cli.add_command(bundle.group)
cli.add_command(generator.group)
cli.add_command(host.group)
cli.add_command(enclave.group)
cli.add_command(serve.command)
cli.add_command(verify.command)
cli.add_command(demo.command)


def main() -> None:
    """Console-script entry point: typed nitrotls errors become one line and an exit code."""
    sys.exit(run_guarded(cli))
