"""Helpers shared by CA tests (importable as ``ca.ca_support``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

BLOCKED_DOMAIN = "blocked.nitrotls.test"  # on the test Pebble's domain blocklist
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def make_csr(
    names: Sequence[str], key: PrivateKey | None = None, *, common_name: str | None = None
) -> tuple[bytes, PrivateKey]:
    """A DER CSR for ``names`` (DNS names or IP literals) and its key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or names[0])])
    )
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER), key
