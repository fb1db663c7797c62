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
@click.option(
    "--enclave",
    "enclave_spec",
    metavar="device|simulated:IMAGE[:debug]",
    default=None,
    help="Enclave identity for roles that attest (default: $NITROTLS_ENCLAVE, else /dev/nsm "
    "when present; never a silent fallback to simulation).",
)
def cli(home_dir: Path | None, enclave_spec: str | None) -> None:
    """CA-signed TLS for AWS Nitro Enclaves: keys born and kept inside attested enclaves."""
    if home_dir is not None:
        home.set_home(home_dir)
    from nitrotls.nsm import set_enclave

    set_enclave(enclave_spec)  # validated now; roles call nitrotls.nsm.enclave_from_spec(None)


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
