"""The simulated NSM's certificate authorities, persisted under ``data_dir()/nsm/``.

The chain mirrors AWS's: a self-signed P-384 root (30 years, no pathLen), a regional CA
(pathLen 2, about 20 days), a zonal CA (pathLen 1, about 5 days), a per-instance CA (pathLen 0,
keyCertSign only, one day), and the enclave's own signing certificate (3 hours, CA=false,
digitalSignature + nonRepudiation, no key identifiers), all ecdsa-with-SHA384. Every name says
``nitrotls-dev`` so nobody mistakes it for AWS. The root is made once and never replaced
(verifiers pin its fingerprint); the intermediates are re-issued when they no longer cover the
next leaf's window. Private keys are written atomically with mode 0600 under a file lock, so
several processes share one chain. They are development CA keys, not TLS keys.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nitrotls import home
from nitrotls.nsm.errors import DevCAError
from nitrotls.nsm.files import locked, write_atomic

REGION = "dev-1"
ROOT_LIFETIME = timedelta(days=30 * 365)
REGIONAL_LIFETIME = timedelta(days=20)
ZONAL_LIFETIME = timedelta(days=5)
INSTANCE_LIFETIME = timedelta(days=1)
LEAF_LIFETIME = timedelta(hours=3)
_ROOT = "dev-root"
_CA_USAGE = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
_INSTANCE_USAGE = x509.KeyUsage(False, False, False, False, False, True, False, False, False)
_LEAF_USAGE = x509.KeyUsage(True, True, False, False, False, False, False, False, False)


@dataclass(frozen=True)
class Authority:
    """A CA certificate with its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    der: bytes


@dataclass(frozen=True)
class DevChain:
    """Root, regional, zonal and instance CAs, valid together over a window."""

    cabundle: tuple[bytes, ...]
    instance: Authority


@dataclass(frozen=True)
class Leaf:
    """An enclave signing certificate and key, with the cabundle it chains through."""

    key: ec.EllipticCurvePrivateKey
    der: bytes
    not_before: datetime
    not_after: datetime
    cabundle: tuple[bytes, ...]


def state_dir() -> Path:
    """``data_dir()/nsm``, private."""
    return home.sub_dir("nsm")


def dev_root_certificate(now: datetime | None = None) -> bytes:
    """DER of the dev root, created when absent."""
    directory = state_dir()
    with locked(directory):
        return _root(directory, now or _utcnow()).der


def dev_root_fingerprint() -> bytes:
    """SHA-256 of the dev root's DER: what a verifier pins to trust simulated documents."""
    return hashlib.sha256(dev_root_certificate()).digest()


def chain_for(instance_id: str, now: datetime, until: datetime) -> DevChain:
    """The CA chain for ``instance_id``, every certificate valid from ``now`` to ``until``."""
    directory = state_dir()
    with locked(directory):
        root = _root(directory, now)
        regional = _ensure(directory, "regional", root, now, until, _make_regional)
        zonal = _ensure(directory, "zonal", regional, now, until, _make_zonal)
        instance = _ensure(
            directory, f"instance-{instance_id}", zonal, now, until, _instance_maker(instance_id)
        )
    return DevChain((root.der, regional.der, zonal.der, instance.der), instance)


def issue_leaf(chain: DevChain, module_id: str, now: datetime) -> Leaf:
    """A fresh enclave signing key and its 3-hour certificate under the instance CA."""
    key = ec.generate_private_key(ec.SECP384R1())
    start = _second(now)
    builder = (
        _builder(_name(f"{module_id}.{REGION}.nitrotls-dev"), chain.instance.cert.subject)
        .public_key(key.public_key())
        .not_valid_before(start)
        .not_valid_after(start + LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_USAGE, critical=False)
    )
    cert = builder.sign(chain.instance.key, hashes.SHA384())
    return Leaf(
        key,
        cert.public_bytes(serialization.Encoding.DER),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        chain.cabundle,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "ZZ"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nitrotls"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "nitrotls-dev (simulated)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .serial_number(x509.random_serial_number())
    )


def _ca(
    subject: x509.Name,
    parent: Authority | None,
    now: datetime,
    lifetime: timedelta,
    path_length: int | None,
) -> Authority:
    """A regional/zonal-style CA (or the root when ``parent`` is None)."""
    key = ec.generate_private_key(ec.SECP384R1())
    start = _second(now)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        _builder(subject, parent.cert.subject if parent else subject)
        .public_key(key.public_key())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    )
    if parent is not None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key())
        builder = builder.add_extension(aki, critical=False)
    builder = builder.add_extension(ski, critical=False).add_extension(_CA_USAGE, critical=True)
    cert = builder.sign(parent.key if parent else key, hashes.SHA384())
    return Authority(cert, key, cert.public_bytes(serialization.Encoding.DER))


def _make_regional(parent: Authority, now: datetime) -> Authority:
    name = _name(f"{secrets.token_hex(8)}.{REGION}.nitrotls-dev.nitro-enclaves")
    return _ca(name, parent, now, REGIONAL_LIFETIME, 2)


def _make_zonal(parent: Authority, now: datetime) -> Authority:
    name = _name(f"{secrets.token_hex(8)}.zonal.{REGION}.nitrotls-dev.nitro-enclaves")
    return _ca(name, parent, now, ZONAL_LIFETIME, 1)


def _instance_maker(instance_id: str) -> Callable[[Authority, datetime], Authority]:
    def make(parent: Authority, now: datetime) -> Authority:
        key = ec.generate_private_key(ec.SECP384R1())
        start = _second(now)
        cert = (
            _builder(
                _name(f"{instance_id}.{REGION}.nitrotls-dev.nitro-enclaves"), parent.cert.subject
            )
            .public_key(key.public_key())
            .not_valid_before(start)
            .not_valid_after(start + INSTANCE_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_INSTANCE_USAGE, critical=True)
            .sign(parent.key, hashes.SHA384())
        )
        return Authority(cert, key, cert.public_bytes(serialization.Encoding.DER))

    return make


def _paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"{name}.key.pem", directory / f"{name}.crt.pem"


def _store(directory: Path, name: str, authority: Authority) -> None:
    key_path, cert_path = _paths(directory, name)
    key_pem = authority.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a crash in between leaves a cert that no longer matches, which is re-issued.
    write_atomic(key_path, key_pem, mode=0o600)
    write_atomic(cert_path, authority.cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _load(directory: Path, name: str) -> Authority | None:
    """The stored authority, or None when absent, unreadable or its key does not match."""
    key_path, cert_path = _paths(directory, name)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return Authority(cert, key, cert.public_bytes(serialization.Encoding.DER))


def _root(directory: Path, now: datetime) -> Authority:
    _, cert_path = _paths(directory, _ROOT)
    if not cert_path.exists():
        root = _ca(_name("nitrotls-dev.nitro-enclaves"), None, now, ROOT_LIFETIME, None)
        _store(directory, _ROOT, root)
        return root
    root_or_none = _load(directory, _ROOT)
    if root_or_none is None:
        raise DevCAError(
            f"the dev root in {directory} is damaged (certificate or key unreadable, or they do "
            "not match); delete that directory to create a new dev root (verifiers that pinned "
            "the old fingerprint must then be updated)"
        )
    if not root_or_none.cert.not_valid_before_utc <= now <= root_or_none.cert.not_valid_after_utc:
        raise DevCAError(
            f"the dev root in {directory} is valid from {root_or_none.cert.not_valid_before_utc} "
            f"to {root_or_none.cert.not_valid_after_utc}, not at {now}; delete that directory "
            "to create a new one"
        )
    return root_or_none


def _ensure(
    directory: Path,
    name: str,
    parent: Authority,
    now: datetime,
    until: datetime,
    make: Callable[[Authority, datetime], Authority],
) -> Authority:
    stored = _load(directory, name)
    if stored is not None and _fits(stored.cert, parent.cert, now, until):
        return stored
    fresh = make(parent, now)
    _store(directory, name, fresh)
    return fresh


def _fits(cert: x509.Certificate, parent: x509.Certificate, now: datetime, until: datetime) -> bool:
    if cert.issuer != parent.subject:
        return False
    try:
        cert.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return cert.not_valid_before_utc <= now and until <= cert.not_valid_after_utc
