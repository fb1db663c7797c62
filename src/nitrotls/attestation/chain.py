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
from datetime import datetime
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from nitrotls.attestation.certificate import Certified, check_issued, load_certificate
from nitrotls.attestation.errors import (
    BrokenChainError,
    CertificateExpiredError,
    UnsupportedAlgorithmError,
    UntrustedRootError,
)

DEFAULT_CACHE_ENTRIES = 4096
_K = TypeVar("_K", bytes, tuple[bytes, bytes])


class ChainVerifier:
    """Proves leaf ← cabundle ← pinned root, caching proven roots and links. Thread-safe."""

    def __init__(
        self, root_fingerprints: Iterable[bytes], max_entries: int = DEFAULT_CACHE_ENTRIES
    ) -> None:
        self._fingerprints = frozenset(bytes(f) for f in root_fingerprints)
        self._max_entries = max(1, max_entries)
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
                "certificate: expected a P-384 EC key (ES384), found"
                f" {type(chain[-1].public_key).__name__}"
            )
        return key

    def clear(self) -> None:
        """Forget every proven root and link (tests, and operators rotating trust)."""
        with self._lock:
            self._roots.clear()
            self._links.clear()

    # Reads take no lock: a single dict lookup is atomic; writes and evictions hold the lock.
    def _root(self, der: bytes) -> Certified:
        found = self._roots.get(der)
        if found is not None:
            return found
        fingerprint = hashlib.sha256(der).digest()
        if fingerprint not in self._fingerprints:
            raise UntrustedRootError(
                "cabundle[0]: expected a root whose SHA-256 fingerprint is pinned, found"
                f" {fingerprint.hex()[:16]}… (certificates in a document are never trust anchors)"
            )
        root = load_certificate(der, "cabundle[0]")
        with self._lock:
            self._store(self._roots, der, root)
        return root

    def _link(self, der: bytes, issuer: Certified, where: str) -> Certified:
        key = (der, issuer.der)
        found = self._links.get(key)
        if found is not None:
            return found
        child = load_certificate(der, where)
        check_issued(child, issuer, where)
        with self._lock:
            self._store(self._links, key, child)
        return child

    def _store(self, table: dict[_K, Certified], key: _K, value: Certified) -> None:
        while len(table) >= self._max_entries:
            del table[next(iter(table))]  # oldest first: dicts keep insertion order
        table[key] = value


def _check_constraints(chain: Sequence[Certified]) -> None:
    """Issuers must be CAs allowed to sign certificates, within their path length."""
    last = len(chain) - 1
    for position, issuer in enumerate(chain[:-1]):
        if not (issuer.is_ca and issuer.key_cert_sign):
            where = f"cabundle[{position}] ({issuer.subject})"
            missing = "basicConstraints cA" if not issuer.is_ca else "keyUsage keyCertSign"
            raise BrokenChainError(f"{where}: expected a CA with {missing}, found none")
        below = last - position - 1  # intermediate CAs between this issuer and the leaf
        if issuer.path_length is not None and below > issuer.path_length:
            raise BrokenChainError(
                f"cabundle[{position}] ({issuer.subject}): pathLenConstraint"
                f" {issuer.path_length} allows at most {issuer.path_length} CAs below it,"
                f" found {below}"
            )
    if not chain[last].digital_signature:
        raise BrokenChainError("certificate: expected keyUsage digitalSignature on the leaf")


def _check_validity(chain: Sequence[Certified], at: datetime) -> None:
    for position, entry in enumerate(chain):
        if not entry.not_before <= at <= entry.not_after:
            where = "certificate (leaf)" if position == len(chain) - 1 else f"cabundle[{position}]"
            raise CertificateExpiredError(
                f"{where} {entry.subject!r}: expected valid at {at.isoformat()}, found valid"
                f" only from {entry.not_before.isoformat()} to {entry.not_after.isoformat()}"
                " (stored documents can be checked as of their own timestamp)"
            )
