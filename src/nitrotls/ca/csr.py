"""CSR intake shared by every CA: parse, verify the signature, extract and check the names.

A CA must only certify a key whose holder asked for it, so the CSR's self-signature is checked
before anything else; and it must certify exactly the names asked for, so names come from the
subjectAltName extension only (never from the subject's common name).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID

from nitrotls.ca.errors import CSRError

MAX_CSR_BYTES = 64 * 1024
MAX_NAMES = 100
MIN_RSA_BITS = 2048
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class CSRNames:
    """The identifiers a CSR asks for, in the CSR's order."""

    dns: tuple[str, ...]
    ips: tuple[IPAddress, ...]


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR and verify its self-signature; :class:`CSRError` otherwise."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise CSRError("expected a CSR (PEM or DER bytes), got nothing")
    if len(data) > MAX_CSR_BYTES:
        raise CSRError(f"CSR is {len(data)} bytes; at most {MAX_CSR_BYTES} accepted")
    raw = bytes(data)
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(raw)
        else:
            csr = x509.load_der_x509_csr(raw)
    except ValueError as error:
        raise CSRError(f"CSR does not parse as PEM or DER PKCS#10: {error}") from error
    try:
        valid = csr.is_signature_valid
    except Exception as error:
        raise CSRError(f"CSR signature cannot be checked: {error}") from error
    if not valid:
        raise CSRError("CSR signature does not verify: it was not signed by the key it carries")
    check_public_key(csr)
    return csr


def check_public_key(csr: x509.CertificateSigningRequest) -> None:
    """Only keys a TLS server should use: EC P-256/384/521 or RSA ≥ 2048 bits."""
    try:
        key = csr.public_key()
    except Exception as error:
        raise CSRError(f"CSR public key is not usable: {error}") from error
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES):
            raise CSRError(f"CSR key uses curve {key.curve.name}; expected P-256, P-384 or P-521")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CSRError(f"CSR RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} needed")
    else:
        raise CSRError(f"CSR key type {type(key).__name__} is not supported; use EC or RSA")


def csr_names(csr: x509.CertificateSigningRequest) -> CSRNames:
    """DNS names and IP addresses from the subjectAltName extension, checked and de-duplicated."""
    try:
        extension = csr.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        raise CSRError("CSR has no subjectAltName extension; put every name there") from None
    except ValueError as error:
        raise CSRError(f"CSR extensions do not parse: {error}") from error
    san = extension.value
    assert isinstance(san, x509.SubjectAlternativeName)
    unsupported = [g for g in san if not isinstance(g, x509.DNSName | x509.IPAddress)]
    if unsupported:
        raise CSRError(f"CSR asks for unsupported name types: {unsupported!r}")
    dns = tuple(dict.fromkeys(check_dns_name(n) for n in san.get_values_for_type(x509.DNSName)))
    ips = tuple(dict.fromkeys(_check_ip(ip) for ip in san.get_values_for_type(x509.IPAddress)))
    if not dns and not ips:
        raise CSRError("CSR subjectAltName names no DNS name or IP address")
    if len(dns) + len(ips) > MAX_NAMES:
        raise CSRError(f"CSR asks for {len(dns) + len(ips)} names; at most {MAX_NAMES}")
    return CSRNames(dns=dns, ips=ips)


def check_dns_name(name: str) -> str:
    """A lower-case ASCII host name (A-labels), optionally with one leading ``*.`` label."""
    lowered = name.lower()
    wildcard = lowered.startswith("*.")
    labels = (lowered[2:] if wildcard else lowered).split(".")
    well_formed = all(_LABEL.fullmatch(label) for label in labels)
    if len(lowered) > 253 or not well_formed or (wildcard and len(labels) < 2):
        raise CSRError(
            f"CSR name {name!r} is not a valid DNS name (ASCII letters, digits, hyphens; IDNs as "
            "xn-- A-labels; '*.' only as the first label, above at least two labels)"
        )
    return lowered


def _check_ip(value: object) -> IPAddress:
    if not isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise CSRError(f"CSR asks for an IP network {value}, not an address")
    return value
