"""The ``nitrotls`` command: parse, call the library, print. No business logic lives here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from nitrotls import __version__, home
from nitrotls.cli.output import run_guarded

# name -> (module under nitrotls.cli, attribute): imported only when the command runs, so a
# process that runs one command does not pay for importing every role (boto3, uvicorn, acme…).
COMMANDS: dict[str, tuple[str, str]] = {
    "attestation": ("attestation", "group"),
    "kms": ("kms", "group"),
    "bundle": ("bundle", "group"),
    "generator": ("generator", "group"),
    "host": ("host", "group"),
    "enclave": ("enclave", "group"),
    "serve": ("serve", "command"),
    "verify": ("verify", "command"),
    "demo": ("demo", "command"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[cmd_name]
        module = importlib.import_module(f"nitrotls.cli.{module_name}")
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    """Console-script entry point: typed nitrotls errors become one line and an exit code."""
    sys.exit(run_guarded(cli))
