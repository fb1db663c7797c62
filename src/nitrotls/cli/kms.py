"""`nitrotls kms …`: key policies for AWS KMS, and the local KMS server's commands."""

from __future__ import annotations

from pathlib import Path

import click

from nitrotls.attestation import load_pcrs_file
from nitrotls.cli.kms_local import register
from nitrotls.cli.output import print_json
from nitrotls.kms.policy import build_key_policy

_PCR_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group(name="kms")
def group() -> None:
    """Key release through KMS with attestation."""


@group.command(name="policy")
@click.option(
    "--generator-pcrs",
    "generator_files",
    type=_PCR_FILE,
    multiple=True,
    required=True,
    help="PCR file of the generator image (nitro-cli JSON, `attestation measure`, or a map).",
)
@click.option(
    "--main-pcrs",
    "main_files",
    type=_PCR_FILE,
    multiple=True,
    required=True,
    help="PCR file of a main-enclave image; repeat during rolling upgrades.",
)
@click.option("--admin", "admins", multiple=True, required=True, help="Administrator IAM ARN.")
@click.option("--enclave-role", required=True, help="IAM role ARN of the enclave's parent.")
@click.option("--account-id", default=None, help="Also require kms:CallerAccount to be this.")
@click.option(
    "--pcr8/--no-pcr8",
    "include_pcr8",
    default=None,
    help="Require PCR8 (signed images). Default: when the PCR file has a non-zero PCR8.",
)
@click.option(
    "--allow-debug", is_flag=True, help="Accept all-zero (debug-mode) measurements. Never in prod."
)
def policy(
    generator_files: tuple[Path, ...],
    main_files: tuple[Path, ...],
    admins: tuple[str, ...],
    enclave_role: str,
    account_id: str | None,
    include_pcr8: bool | None,
    allow_debug: bool,
) -> None:
    """Print the key policy (JSON) that releases data keys only to attested enclaves."""
    document = build_key_policy(
        [load_pcrs_file(path) for path in generator_files],
        [load_pcrs_file(path) for path in main_files],
        admins,
        enclave_role,
        account_id=account_id,
        include_pcr8=include_pcr8,
        allow_debug=allow_debug,
    )
    print_json(document)


register(group)
