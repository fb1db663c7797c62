"""The certificate chain: pinned root ← cabundle (root first) ← leaf, with a cache of proven links.

A link is "this exact certificate DER is issued by that exact issuer DER": names chain and the
issuer's key signed it. Only successful link checks are cached, keyed on both DERs, so the cache
can skip signature work but can never admit a certificate that was not proven. What depends on
the chain as a whole or on the instant (CA rights, path length, validity) is checked on every
call from the cached, already-parsed values.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from nitrotls.attestation.errors import (
    BrokenChainError,
    CertificateExpiredError,
    DocumentEncodingError,
    UnsupportedAlgorithmError,
    UntrustedRootError,
)

DEFAULT_CACHE_ENTRIES = 4096
_K = TypeVar("_K", bytes, tuple[bytes, bytes])
_E = TypeVar("_E", bound=x509.ExtensionType)
_UNDERSTOOD_CRITICAL = frozenset((ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE))
_SIGNATURE_ALGORITHMS = frozenset(
    (
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    )
)


@dataclass(frozen=True, slots=True)
class Certified:
    """A parsed certificate and the profile facts the per-call checks need."""

    der: bytes
    cert: x509.Certificate
    subject_name: x509.Name
    issuer_name: x509.Name
    subject: str  # for messages
    signature_algorithm: x509.ObjectIdentifier
    not_before: datetime
    not_after: datetime
    is_ca: bool
    path_length: int | None
    key_cert_sign: bool
    digital_signature: bool
    es384_key: ec.EllipticCurvePublicKey | None  # set when the key is P-384 (leaf use)


class ChainVerifier:
    """Proves leaf ← cabundle ← pinned root, caching proven roots and links. Thread-safe."""

    def __init__(
        self, root_fingerprints: Iterable[bytes], max_entries: int = DEFAULT_CACHE_ENTRIES
    ) -> None:
        self._fingerprints = frozenset(bytes(f) for f in root_fingerprints)
        self._max_entries = max_entries
        self._roots: dict[bytes, Certified] = {}
        self._links: dict[tuple[bytes, bytes], Certified] = {}
        self._lock = threading.Lock()

    def verify(
        self, leaf: bytes, cabundle: Sequence[bytes], at: datetime
    ) -> ec.EllipticCurvePublicKey:
        """Return the leaf's P-384 key once the whole chain is proven and valid at ``at``."""
        chain = [self._root(cabundle[0])]
        for position, der in enumerate(cabundle[1:], start=1):
            chain.append(self._link(der, chain[-1], f"cabundle[{position}]"))
        chain.append(self._link(leaf, chain[-1], "certificate"))
        _check_constraints(chain)
        _check_validity(chain, at)
        key = chain[-1].es384_key
        if key is None:
            raise UnsupportedAlgorithmError(
                "leaf certificate: expected a P-384 EC key (ES384), found"
                f" {type(chain[-1].cert.public_key()).__name__}"
            )
        return key

    def clear(self) -> None:
        """Forget every proven root and link (tests, and operators rotating trust)."""
        with self._lock:
            self._roots.clear()
            self._links.clear()

    def _root(self, der: bytes) -> Certified:
        with self._lock:
            found = self._roots.get(der)
        if found is not None:
            return found
        fingerprint = hashlib.sha256(der).digest()
        if fingerprint not in self._fingerprints:
            raise UntrustedRootError(
                "cabundle[0]: expected a root whose SHA-256 fingerprint is pinned, found"
                f" {fingerprint.hex()[:16]}… (certificates in a document are never trust anchors)"
            )
        root = _certified(der, "cabundle[0]")
        with self._lock:
            self._store(self._roots, der, root)
        return root

    def _link(self, der: bytes, issuer: Certified, where: str) -> Certified:
        key = (der, issuer.der)
        with self._lock:
            found = self._links.get(key)
        if found is not None:
            return found
        child = _certified(der, where)
        _check_issued(child, issuer, where)
        with self._lock:
            self._store(self._links, key, child)
        return child

    def _store(self, table: dict[_K, Certified], key: _K, value: Certified) -> None:
        while len(table) >= self._max_entries:
            del table[next(iter(table))]  # oldest first: dicts keep insertion order
        table[key] = value


def _certified(der: bytes, where: str) -> Certified:
    try:
        cert = x509.load_der_x509_certificate(der)
        # Parse every lazily decoded field now, so malformed DER fails here and only here.
        subject, issuer = cert.subject, cert.issuer
        subject_text = subject.rfc4514_string()[:160]
        signature_algorithm = cert.signature_algorithm_oid
        extensions = cert.extensions
        constraints = _extension(extensions, x509.BasicConstraints)
        usage = _extension(extensions, x509.KeyUsage)
        critical = [e.oid for e in extensions if e.critical and e.oid not in _UNDERSTOOD_CRITICAL]
        public_key = cert.public_key()
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    except Exception as error:  # malformed DER surfaces as ValueError and friends
        raise DocumentEncodingError(f"{where}: certificate DER does not parse ({error})") from error
    if critical:
        raise BrokenChainError(f"{where}: unknown critical extension {critical[0].dotted_string}")
    return Certified(
        der=der,
        cert=cert,
        subject_name=subject,
        issuer_name=issuer,
        subject=subject_text,
        signature_algorithm=signature_algorithm,
        not_before=not_before,
        not_after=not_after,
        is_ca=constraints is not None and constraints.ca,
        path_length=constraints.path_length if constraints is not None else None,
        key_cert_sign=usage is not None and usage.key_cert_sign,
        digital_signature=usage is not None and usage.digital_signature,
        es384_key=_p384_key(public_key),
    )


def _p384_key(key: object) -> ec.EllipticCurvePublicKey | None:
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        return key
    return None


def _extension(extensions: x509.Extensions, kind: type[_E]) -> _E | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_issued(child: Certified, issuer: Certified, where: str) -> None:
    if child.issuer_name != issuer.subject_name:
        raise BrokenChainError(
            f"{where}: expected issuer {issuer.subject!r} (the certificate above it),"
            f" found issuer {_name_text(child.issuer_name)!r}"
        )
    if child.signature_algorithm not in _SIGNATURE_ALGORITHMS:
        raise BrokenChainError(
            f"{where}: expected an ECDSA signature, found {child.signature_algorithm.dotted_string}"
        )
    try:
        child.cert.verify_directly_issued_by(issuer.cert)
    except Exception as error:  # InvalidSignature, ValueError, TypeError: all mean "not issued"
        raise BrokenChainError(
            f"{where}: expected a signature by {issuer.subject!r}, found one that does not verify"
            f" ({type(error).__name__})"
        ) from error


def _name_text(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()[:160]
    except Exception:  # a name that parsed but does not render
        return "(unprintable name)"


def _check_constraints(chain: Sequence[Certified]) -> None:
    """Issuers must be CAs allowed to sign certificates, within their path length."""
    last = len(chain) - 1
    for position, issuer in enumerate(chain[:-1]):
        where = f"cabundle[{position}] ({issuer.subject})"
        if not issuer.is_ca:
            raise BrokenChainError(f"{where}: expected a CA (basicConstraints cA), found none")
        if not issuer.key_cert_sign:
            raise BrokenChainError(f"{where}: expected keyUsage keyCertSign, found none")
        below = last - position - 1  # intermediate CAs between this issuer and the leaf
        if issuer.path_length is not None and below > issuer.path_length:
            raise BrokenChainError(
                f"{where}: pathLenConstraint {issuer.path_length} allows at most"
                f" {issuer.path_length} CAs below it, found {below}"
            )
    if not chain[last].digital_signature:
        raise BrokenChainError("certificate: expected keyUsage digitalSignature on the leaf")


def _check_validity(chain: Sequence[Certified], at: datetime) -> None:
    last = len(chain) - 1
    for position, entry in enumerate(chain):
        if not entry.not_before <= at <= entry.not_after:
            where = "certificate (leaf)" if position == last else f"cabundle[{position}]"
            raise CertificateExpiredError(
                f"{where} {entry.subject!r}: expected valid at {at.isoformat()}, found valid"
                f" only from {entry.not_before.isoformat()} to {entry.not_after.isoformat()}"
                " (stored documents can be checked as of their own timestamp)"
            )
