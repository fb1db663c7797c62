"""A small launcher for Pebble, the ACME test CA, on 127.0.0.1 (when the ``pebble`` tool exists).

Pebble serves ACME over HTTPS with a certificate we give it; the demo makes a throwaway TLS CA
and server certificate for 127.0.0.1 under ``demo/ca/pebble`` (kept across runs, renewed when
near expiry). Pebble validates HTTP-01 by connecting to ``httpPort`` on the address the name
resolves to (``localhost`` → 127.0.0.1), where the host's ``acme-responder`` answers from the
store. Pebble makes a new issuing root every time it starts and keeps its state in memory, so
:func:`save_roots` keeps each root the demo has seen, to find the one a bundle chains to.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nitrotls.nsm import write_atomic

ENV = {
    "PEBBLE_VA_NOSLEEP": "1",  # validate at once instead of sleeping up to 15 s
    "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce: the demo should not look flaky
}
TLS_LIFETIME = datetime.timedelta(days=30)
TLS_RENEW_BEFORE = datetime.timedelta(days=2)


def pebble_path() -> str | None:
    """The ``pebble`` executable, if installed."""
    return shutil.which("pebble")


@dataclass(frozen=True)
class PebbleSetup:
    """How to start Pebble and reach it."""

    argv: tuple[str, ...]
    acme_port: int
    management_port: int
    tls_ca: Path

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://127.0.0.1:{self.management_port}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls_ca))


def prepare(
    directory: Path, executable: str, *, acme_port: int, management_port: int, http_port: int,
    tls_port: int,
) -> PebbleSetup:  # fmt: skip
    """Write Pebble's TLS files and configuration; return the command line to start it."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tls_ca, cert, key = _tls_files(directory)
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    config_path = directory / "pebble-config.json"
    write_atomic(config_path, json.dumps(config, indent=2).encode(), mode=0o600)
    return PebbleSetup(
        (executable, "-config", str(config_path)), acme_port, management_port, tls_ca
    )


def fetch_roots(setup: PebbleSetup) -> list[bytes]:
    """The PEM of Pebble's current issuing root (from its management interface)."""
    with httpx.Client(verify=setup.ssl_context(), timeout=5.0, trust_env=False) as client:
        response = client.get(f"{setup.management_url}/roots/0")
        response.raise_for_status()
        return [response.content]


def save_roots(directory: Path, pems: list[bytes]) -> list[Path]:
    """Keep each root under ``directory/roots/<sha256>.pem``; return the paths."""
    roots = directory / "roots"
    roots.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = []
    for pem in pems:
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        path = roots / f"{hashlib.sha256(der).hexdigest()}.pem"
        if not path.exists():
            write_atomic(path, pem, mode=0o644)
        paths.append(path)
    return paths


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """Pebble's TLS CA and server certificate for 127.0.0.1 (reused until near expiry)."""
    ca_path, cert_path, key_path = (
        directory / "tls-ca.pem",
        directory / "tls-cert.pem",
        directory / "tls-key.pem",
    )
    now = datetime.datetime.now(datetime.UTC)
    if cert_path.exists() and ca_path.exists() and key_path.exists():
        try:
            current = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if current.not_valid_after_utc - now > TLS_RENEW_BEFORE:
                return ca_path, cert_path, key_path
        except ValueError:
            pass
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nitrotls demo Pebble TLS CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        _builder(subject, ca_name, key.public_key(), now)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(key_path, key_pem, mode=0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    write_atomic(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return ca_path, cert_path, key_path


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + TLS_LIFETIME)
    )
