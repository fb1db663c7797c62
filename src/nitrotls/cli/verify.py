"""`nitrotls verify`: prove an https endpoint is a measured enclave (or check stored evidence)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from nitrotls.cli.output import console, json_option, print_json
from nitrotls.cli.policy_options import build_policy, pcr_options

if TYPE_CHECKING:
    from nitrotls.attestation import Verifier


@click.command(name="verify")
@click.argument("url", required=False)
@pcr_options
@click.option("--cacert", type=click.Path(exists=True, dir_okay=False), help="CA file for TLS.")
@click.option("--dev", is_flag=True, help="Also trust the simulated NSM's dev root.")
@click.option("--max-age", type=float, default=None, help="Maximum document age in seconds.")
@click.option(
    "--allow-debug", is_flag=True, help="Accept debug-mode enclaves (never in production)."
)
@click.option(
    "--allow-insecure-dev", is_flag=True, help="Accept the insecure bundled-certificate dev mode."
)
@click.option(
    "--allow-any-measurement",
    is_flag=True,
    help="Accept any enclave image (no PCR requirement): proves only that it is *an* enclave.",
)
@click.option("--offline", is_flag=True, help="Check stored evidence instead of connecting.")
@click.option("--document", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--at-document-time", is_flag=True, help="Offline: judge as of the document's time.")
@json_option
def command(
    url: str | None,
    pcr_pins: tuple[str, ...],
    pcrs_files: tuple[Path, ...],
    cacert: str | None,
    dev: bool,
    max_age: float | None,
    allow_debug: bool,
    allow_insecure_dev: bool,
    allow_any_measurement: bool,
    offline: bool,
    document: Path | None,
    cert: Path | None,
    at_document_time: bool,
    as_json: bool,
) -> None:
    """Connect to URL (https://HOST[:PORT]) and prove the enclave holds the certificate's key."""
    from nitrotls.client import connect
    from nitrotls.client.offline import verify_offline

    policy = build_policy(
        pcr_pins,
        pcrs_files,
        allow_debug=allow_debug,
        max_age=max_age,
        allow_any_measurement=allow_any_measurement,
    )
    verifier = _verifier(dev)
    if offline:
        if document is None or cert is None or url is not None:
            raise click.UsageError("--offline takes --document DOC and --cert CERT, and no URL")
        verdict = verify_offline(
            document.read_bytes(),
            cert.read_bytes(),
            policy,
            verifier=verifier,
            at_document_time=at_document_time,
            allow_insecure_dev=allow_insecure_dev,
        )
    else:
        if url is None:
            raise click.UsageError("give a URL, or --offline with --document and --cert")
        with connect(
            url, policy, verifier=verifier, ca=cacert, allow_insecure_dev=allow_insecure_dev
        ) as conn:
            verdict = conn.verdict
    summary = _summary(verdict, measured=bool(policy.accepted_pcrs))
    if as_json:
        print_json(summary)
    else:
        _print_table(summary)


def _verifier(dev: bool) -> Verifier:
    from nitrotls.attestation import Verifier

    if not dev:
        return Verifier()
    from nitrotls.nsm import trusted_verifier

    return trusted_verifier(True)


def _summary(verdict: Any, *, measured: bool) -> dict[str, Any]:
    doc = verdict.document
    return {
        "verified": True,
        "endpoint": f"{verdict.host}:{verdict.port}" if verdict.host else None,
        "certificate_subject": verdict.leaf_subject,
        "spki_sha384": verdict.spki_sha384.hex(),
        "bundle_id": verdict.bundle_id.hex(),
        "module_id": doc.module_id,
        "document_time": datetime.fromtimestamp(doc.timestamp_ms / 1000, UTC).isoformat(),
        "pcrs": {str(i): doc.pcrs[i].hex() for i in sorted(doc.pcrs) if i in (0, 1, 2, 3, 4, 8)},
        "matched_pcr_set": verdict.matched_set,
        "measurement_checked": measured,
        "nonce": verdict.nonce.hex() if verdict.nonce else None,
        "insecure_dev_mode": verdict.insecure,
    }


def _print_table(summary: dict[str, Any]) -> None:
    table = Table(
        title="[green]attested[/]: the enclave holds this certificate's key", show_header=False
    )
    for key, value in summary.items():
        if key == "pcrs":
            for index, pcr in value.items():
                table.add_row(f"PCR{index}", pcr)
        else:
            table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    if not summary["measurement_checked"]:
        console.print("[yellow]warning[/]: no measurement was checked; any enclave image passes")
