"""`nitrotls attestation …`: inspect, verify, measure, simulate."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Column, Table

from nitrotls.attestation import (
    AttestationDocument,
    AttestationError,
    DocumentEncodingError,
    Policy,
    Verifier,
    parse_document,
    unwrap_document,
)
from nitrotls.attestation.summary import certificate_summaries, describe_field, summary
from nitrotls.cli.attestation_sim import measure, simulate
from nitrotls.cli.output import console, json_option, print_json
from nitrotls.cli.policy_options import accepted_sets, pcr_options

# Raw documents are under 16 KiB; base64 or hex text of one is at most about twice that.
_MAX_FILE_BYTES = 64 * 1024
_NO_MEASUREMENT = (
    "no measurement was checked (no --pcr or --pcrs-file): any genuine enclave is accepted"
)


@click.group(name="attestation")
def group() -> None:
    """Parse, verify and simulate Nitro attestation documents."""


@click.command(name="inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def inspect(file: Path, as_json: bool) -> None:
    """Show a document's contents (raw CBOR, base64 or hex). Nothing is verified."""
    document = parse_document(_read_document(file)).document
    if as_json:
        print_json(summary(document))
        return
    _print_document(document)
    console.print("[yellow]inspected only: run 'nitrotls attestation verify' to check it[/]")


@click.command(name="verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pcr_options
@click.option("--at", "at_text", metavar="ISO8601", help="Verify as of this instant.")
@click.option("--at-document-time", is_flag=True, help="Verify as of the document's own timestamp.")
@click.option("--allow-debug", is_flag=True, help="Accept debug-mode enclaves (PCR0-2 zero).")
@click.option("--nonce", "nonce_hex", metavar="HEX", help="Require this nonce.")
@click.option(
    "--max-age", type=click.FloatRange(min=0), metavar="SECONDS", help="Maximum document age."
)
@click.option("--dev", is_flag=True, help="Also trust the simulated NSM's dev root.")
@json_option
def verify(
    file: Path,
    pcr_pins: Sequence[str],
    pcrs_files: Sequence[Path],
    at_text: str | None,
    at_document_time: bool,
    allow_debug: bool,
    nonce_hex: str | None,
    max_age: float | None,
    dev: bool,
    as_json: bool,
) -> None:
    """Accept a document (exit 0) or refuse it with the reason (non-zero)."""
    if at_text is not None and at_document_time:
        raise click.UsageError("give --at or --at-document-time, not both")
    data = _read_document(file)
    sets = accepted_sets(pcr_pins, pcrs_files)
    policy = Policy(
        accepted_pcrs=sets,
        allow_debug=allow_debug,
        max_age=timedelta(seconds=max_age) if max_age is not None else None,
        nonce=_hex_option("--nonce", nonce_hex),
        allow_any_measurement=not sets,
    )
    at = parse_document(data).document.timestamp if at_document_time else _instant(at_text)
    try:
        document = _verifier(dev).verify(data, policy, at)
    except AttestationError as error:
        if as_json:
            print_json({"accepted": False, "reason": type(error).__name__, "message": str(error)})
        raise
    _print_verdict(_verdict(document, policy, at), as_json)


group.add_command(inspect)
group.add_command(verify)
group.add_command(measure)
group.add_command(simulate)


def _read_document(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as error:
        raise click.FileError(str(path), error.strerror) from None
    if len(raw) > _MAX_FILE_BYTES:
        raise DocumentEncodingError(
            f"{path}: expected an attestation document (under {_MAX_FILE_BYTES} bytes as text),"
            f" found a larger file"
        )
    return unwrap_document(raw)


def _hex_option(name: str, text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter(f"expected hex, found {text[:40]!r}", param_hint=name) from None


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"expected an ISO 8601 instant, found {text!r}", param_hint="--at"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _verifier(dev: bool) -> Verifier:
    if not dev:
        return Verifier()
    from nitrotls.nsm import trusted_verifier  # only --dev needs the simulated NSM's dev root

    return trusted_verifier(True)


def _verdict(document: AttestationDocument, policy: Policy, at: datetime | None) -> dict[str, Any]:
    matched = policy.matched_set(document)
    return {
        "accepted": True,
        "module_id": document.module_id,
        "timestamp": document.timestamp.isoformat(),
        "checked_at": (at or datetime.now(UTC)).isoformat(),
        "debug": document.is_debug,
        "measurement_checked": policy.checks_measurement,
        "matched_pcr_set": matched + 1 if matched is not None else None,
        "note": None if policy.checks_measurement else _NO_MEASUREMENT,
    }


def _print_verdict(verdict: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(verdict)
        return
    console.print(
        f"[bold green]accepted[/]: {verdict['module_id']}, signed {verdict['timestamp']},"
        f" checked as of {verdict['checked_at']}",
        highlight=False,
    )
    if verdict["measurement_checked"]:
        console.print(f"measurements: matched accepted PCR set {verdict['matched_pcr_set']}")
    else:
        console.print(f"[bold yellow]warning[/]: {_NO_MEASUREMENT}", highlight=False)
    if verdict["debug"]:
        console.print("[bold yellow]warning[/]: debug-mode enclave (allowed by --allow-debug)")


def _print_document(document: AttestationDocument) -> None:
    head = Table(show_header=False, box=None)
    head.add_row("module", document.module_id)
    head.add_row("time", f"{document.timestamp.isoformat()} ({document.timestamp_ms} ms)")
    head.add_row("digest", document.digest)
    head.add_row("debug mode", "yes (PCR0-2 all zero)" if document.is_debug else "no")
    for name in ("public_key", "user_data", "nonce"):
        head.add_row(name, describe_field(getattr(document, name)))
    console.print(head, highlight=False)
    pcrs = Table("PCR", Column("value", overflow="fold"), title="PCRs")
    for index, value in sorted(document.pcrs.items()):
        pcrs.add_row(str(index), value.hex())
    console.print(pcrs, highlight=False)
    chain = Table(
        "position",
        Column("subject", overflow="fold"),
        "not before",
        "not after",
        title="chain (root first)",
    )
    for cert in certificate_summaries(document):
        chain.add_row(cert.position, cert.subject, _when(cert.not_before), _when(cert.not_after))
    console.print(chain, highlight=False)


def _when(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "-"
