"""`nitrotls bundle inspect|verify`: look at and check the bundles in a store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from nitrotls.cli.output import console, json_option, print_json


@click.group(name="bundle")
def group() -> None:
    """Inspect and verify bundles (certificate chain + sealed key + generator attestation)."""


@group.command(name="inspect")
@click.option("--store", "store_spec", help="dir:PATH or s3://bucket/prefix?… (default: local).")
@click.option("--name", help="Only this bundle name (default: every name in the store).")
@json_option
def inspect(store_spec: str | None, name: str | None, as_json: bool) -> None:
    """Names, validity, seq, key type, generator PCRs, KMS key, and whether the binding holds.

    This describes; it does not authenticate (use `bundle verify` for that).
    """
    from nitrotls.bundle import BundleError, summarize
    from nitrotls.store import open_store

    with open_store(store_spec, read_only=True) as store:
        names = [name] if name else store.names()
        rows: list[dict[str, object]] = []
        for each in names:
            latest = store.latest(each)
            if latest is None:
                rows.append({"name": each, "problem": "no bundle published"})
                continue
            try:
                rows.append({"store_id": latest.id, **summarize(latest.data).to_json()})
            except BundleError as error:
                rows.append({"name": each, "store_id": latest.id, "problem": str(error)})
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no bundles in this store")
        return
    for row in rows:
        console.print(_table(row))


def _table(row: dict[str, object]) -> Table:
    """One bundle as field/value rows (narrow enough for any terminal)."""
    table = Table(title=f"bundle {row.get('name')}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    generator = row.get("generator")
    generator = generator if isinstance(generator, dict) else {}
    domains = row.get("domains")
    binding = "ok" if row.get("binding_ok") else "[red]broken[/]"
    fields: list[tuple[str, object]] = [
        ("seq", row.get("seq")),
        ("id", row.get("id") or row.get("store_id")),
        ("domains", ", ".join(domains) if isinstance(domains, list) else None),
        ("valid", f"{row.get('not_before')} .. {row.get('not_after')}"),
        ("key type", row.get("key_type")),
        ("issuer", row.get("issuer")),
        ("KMS key", row.get("kms_key_id")),
        ("generator", generator.get("module_id")),
        *((name, value) for name, value in dict(generator.get("pcrs") or {}).items()),
        ("debug", generator.get("debug")),
        ("binding", binding if "seq" in row else None),
        ("problem", row.get("problem")),
    ]
    for field, value in fields:
        if value is not None:
            table.add_row(field, str(value))
    return table


@group.command(name="verify")
@click.option("--store", "store_spec", help="dir:PATH or s3://bucket/prefix?… (default: local).")
@click.option("--name", required=True, help="The bundle name.")
@click.option(
    "--generator-pcrs",
    "pcr_files",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PCR file of an accepted generator image (repeat for several).",
)
@click.option("--dev", is_flag=True, help="Also trust this machine's simulated-NSM dev root.")
@click.option(
    "--ca-cert",
    "ca_certs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA root (PEM or DER) the chain must lead to (repeat; default: not checked).",
)
@click.option("--min-seq", type=click.IntRange(min=0), default=0, help="Refuse seq below this.")
@json_option
def verify_command(
    store_spec: str | None,
    name: str,
    pcr_files: tuple[Path, ...],
    dev: bool,
    ca_certs: tuple[Path, ...],
    min_seq: int,
    as_json: bool,
) -> None:
    """Exit 0 only when the newest bundle of NAME verifies (everything short of KMS)."""
    from nitrotls.attestation import Policy, load_pcrs_file
    from nitrotls.bundle import BundleFormatError, verify
    from nitrotls.nsm import trusted_verifier
    from nitrotls.store import open_store

    policy = Policy(accepted_pcrs=tuple(load_pcrs_file(path) for path in pcr_files))
    roots = [_load_certificate(path) for path in ca_certs] or None
    with open_store(store_spec, read_only=True) as store:
        latest = store.latest(name)
    if latest is None:
        raise BundleFormatError(f"no bundle named {name!r} in the store")
    verified = verify(latest.data, trusted_verifier(dev), policy, min_seq=min_seq, ca_roots=roots)
    result = {
        "name": verified.name,
        "id": verified.bundle.id_hex,
        "seq": verified.seq,
        "domains": list(verified.domains),
        "not_after": verified.not_after.isoformat(),
        "key_type": verified.key_type,
        "generator_module": verified.generator.module_id,
        "ca_checked": roots is not None,
        "verified_at": datetime.now(UTC).isoformat(),
    }
    if as_json:
        print_json(result)
    else:
        console.print(
            f"[green]ok[/]: {verified.name} seq {verified.seq} ({', '.join(verified.domains)}), "
            f"valid until {verified.not_after:%Y-%m-%d %H:%M}Z, bound by generator "
            f"{verified.generator.module_id}",
            highlight=False,
        )


def _load_certificate(path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from nitrotls.bundle import CertificateChainError

    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)
    except ValueError as error:
        raise CertificateChainError(f"{path} is not a certificate: {error}") from None
