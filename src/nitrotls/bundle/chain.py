"""Certificate chain checks for a bundle: leaf first, valid at an instant, for the right names.

Without CA roots the check is one of consistency (each certificate signed by the next, all in
date, intermediates are CAs, the leaf is a TLS server certificate); trust in the CA then rests on
the generator's attestation. With roots, cryptography's RFC 5280 path validation runs for every
name, so the chain must also lead to one of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import DNSName, IPAddress, verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from nitrotls.bundle.errors import CertificateChainError, NameMismatchError


@dataclass(frozen=True)
class ChainInfo:
    """What a verified chain says: the leaf, its public key, and the names it covers."""

    leaf: x509.Certificate
    spki_der: bytes
    domains: tuple[str, ...]


def leaf_spki(chain: Sequence[bytes]) -> bytes:
    """The DER SubjectPublicKeyInfo of the chain's first certificate."""
    if not chain:
        raise CertificateChainError("the certificate chain is empty")
    return _spki(_load(chain[0], 0))


def check_chain(
    chain: Sequence[bytes],
    *,
    at: datetime,
    names: Sequence[str] | None = None,
    ca_roots: Sequence[bytes] | None = None,
) -> ChainInfo:
    """Check ``chain`` at ``at`` for ``names`` (default: every DNS name of the leaf)."""
    certs = [_load(der, index) for index, der in enumerate(chain)]
    if not certs:
        raise CertificateChainError("the certificate chain is empty")
    leaf = certs[0]
    domains = dns_names(leaf)
    wanted = tuple(names) if names else domains
    if not wanted:
        raise NameMismatchError("the leaf certificate names no DNS name (subjectAltName)")
    for index, cert in enumerate(certs):
        _check_dates(cert, index, at)
    _check_leaf(leaf)
    for index in range(1, len(certs)):
        _check_issued(certs[index - 1], certs[index], index)
    for name in wanted:
        if not any(_covers(pattern, name) for pattern in domains):
            raise NameMismatchError(
                f"the leaf certificate covers {', '.join(domains)}, not {name!r}"
            )
    if ca_roots is not None:
        _check_roots(certs, ca_roots, at, wanted)
    return ChainInfo(leaf=leaf, spki_der=_spki(leaf), domains=domains)


def _load(der: bytes, index: int) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as error:
        raise CertificateChainError(f"chain[{index}] is not a DER certificate: {error}") from None


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    except ValueError as error:
        raise CertificateChainError(f"the leaf's extensions do not parse: {error}") from None
    dns = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)


def _check_dates(cert: x509.Certificate, index: int, at: datetime) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise CertificateChainError(
            f"chain[{index}] ({cert.subject.rfc4514_string() or 'no subject'}) is valid from "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}, not at {at:%Y-%m-%d %H:%M:%SZ}"
        )


def _check_leaf(leaf: x509.Certificate) -> None:
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            raise CertificateChainError("the leaf certificate is a CA certificate")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.SERVER_AUTH not in usage:
        raise CertificateChainError("the leaf certificate's EKU does not allow TLS serverAuth")


def _check_issued(child: x509.Certificate, issuer: x509.Certificate, index: int) -> None:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertificateChainError(f"chain[{index}] signs chain[{index - 1}] but is not a CA")
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError) as error:
        raise CertificateChainError(
            f"chain[{index - 1}] is not issued by chain[{index}]: {error}"
        ) from None
    except Exception as error:  # InvalidSignature and key-type errors: all mean "not signed"
        raise CertificateChainError(
            f"chain[{index - 1}] does not carry a valid signature of chain[{index}] "
            f"({type(error).__name__})"
        ) from None


def _check_roots(
    certs: list[x509.Certificate],
    roots: Sequence[bytes],
    at: datetime,
    names: Sequence[str],
) -> None:
    anchors = [_load_root(der, index) for index, der in enumerate(roots)]
    if not anchors:
        raise CertificateChainError("no CA root given to verify the chain against")
    store = verification.Store(anchors)
    builder = verification.PolicyBuilder().store(store).time(at)
    for name in names:
        subject: verification.Subject
        try:
            subject = IPAddress(ipaddress.ip_address(name))
        except ValueError:
            # A wildcard SAN is checked through a name it covers: the path does not change.
            subject = DNSName("x" + name[1:] if name.startswith("*.") else name)
        try:
            builder.build_server_verifier(subject).verify(certs[0], certs[1:])
        except (verification.VerificationError, ValueError) as error:
            raise CertificateChainError(
                f"the chain does not lead to a given CA root for {name!r}: {error}"
            ) from None


def _load_root(der: bytes, index: int) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as error:
        raise CertificateChainError(f"CA root {index} is not a DER certificate: {error}") from None


def _covers(pattern: str, name: str) -> bool:
    """RFC 6125 matching: exact (case-insensitive), or a left-most '*' label for one label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    head, _, rest = name.partition(".")
    return bool(head) and rest == pattern[2:]
