"""Certificates for bundle tests: a root, an intermediate and leaves with chosen keys and dates."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def new_key(kind: str = "p256") -> CertificateIssuerPrivateKeyTypes:
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(65537, int(kind.removeprefix("rsa")))


def pkcs8(key: CertificateIssuerPrivateKeyTypes) -> bytearray:
    return bytearray(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def spki(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


@dataclass
class CA:
    """A CA certificate and key that can sign intermediates and leaves."""

    key: CertificateIssuerPrivateKeyTypes
    cert: x509.Certificate
    children: list[x509.Certificate] = field(default_factory=list)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @classmethod
    def root(cls, name: str = "bundle test root") -> CA:
        key = new_key("p256")
        return cls(key, _ca_cert(_name(name), key, _name(name), key))

    def intermediate(self, name: str = "bundle test intermediate") -> CA:
        key = new_key("p256")
        return CA(key, _ca_cert(_name(name), key, self.cert.subject, self.key))

    def leaf(
        self,
        public_key: object,
        names: tuple[str, ...] = ("example.test",),
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        eku: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
        ca: bool = False,
    ) -> bytes:
        sans: list[x509.GeneralName] = []
        for item in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(item)))
            except ValueError:
                sans.append(x509.DNSName(item))
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0] if names else "no name"))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
            .not_valid_after(not_after or NOW + dt.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public_key),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.DER)


def _ca_cert(
    subject: x509.Name,
    key: CertificateIssuerPrivateKeyTypes,
    issuer: x509.Name,
    issuer_key: CertificateIssuerPrivateKeyTypes,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
