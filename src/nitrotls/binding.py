"""What a serving enclave binds into the attestation documents it hands to clients.

ARCHITECTURE.md §4 "Serving attestation": user_data is the deterministic CBOR map
``{"t": "nitrotls/tls/1", "spki": SHA-384(leaf SPKI DER), "bundle": bundle id}``. The insecure
development mode (certificate files baked into the image) tags itself ``nitrotls/tls-insecure/1``
so that clients can refuse it. Server and client both use this module, so the two sides cannot
drift apart.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nitrotls.cbor import deterministic_dumps
from nitrotls.errors import NitroTLSError

TLS_TAG = "nitrotls/tls/1"
TLS_INSECURE_TAG = "nitrotls/tls-insecure/1"
NONCE_MIN = 16
NONCE_MAX = 64
_MAX_USER_DATA = 1024
_DECODED_LIMIT = 256


class BindingError(NitroTLSError):
    """The user_data of a serving document is not a nitrotls TLS binding."""


@dataclass(frozen=True)
class TLSBinding:
    """The decoded binding: which certificate key and which bundle the enclave vouches for."""

    tag: str
    spki_sha384: bytes
    bundle_id: bytes

    @property
    def insecure(self) -> bool:
        return self.tag == TLS_INSECURE_TAG

    def encode(self) -> bytes:
        return deterministic_dumps(
            {"t": self.tag, "spki": self.spki_sha384, "bundle": self.bundle_id}
        )


def spki_der(certificate: bytes | x509.Certificate) -> bytes:
    """The DER SubjectPublicKeyInfo of a certificate (DER bytes or a parsed one)."""
    if isinstance(certificate, bytes):
        certificate = x509.load_der_x509_certificate(certificate)
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_sha384(certificate: bytes | x509.Certificate) -> bytes:
    """SHA-384 of the certificate's SPKI: the value both sides bind."""
    return hashlib.sha384(spki_der(certificate)).digest()


def for_certificate(
    certificate_der: bytes, bundle_id: bytes, *, insecure: bool = False
) -> TLSBinding:
    """The binding a server publishes for the leaf it serves."""
    tag = TLS_INSECURE_TAG if insecure else TLS_TAG
    return TLSBinding(tag, spki_sha384(certificate_der), bytes(bundle_id))


_decoded: dict[bytes, TLSBinding] = {}
_decoded_lock = threading.Lock()


def decode(user_data: bytes | None) -> TLSBinding:
    """Parse a serving document's user_data strictly; anything else is a :class:`BindingError`.

    An enclave binds the same value into every document it serves, so successful decodes are
    remembered per exact bytes (a bounded table): a client's warm connections skip the CBOR.
    """
    if not user_data:
        raise BindingError(
            "the attestation document carries no user_data: not a nitrotls TLS binding"
        )
    key = bytes(user_data)
    found = _decoded.get(key)
    if found is not None:
        return found
    binding = _decode(key)
    with _decoded_lock:
        while len(_decoded) >= _DECODED_LIMIT:
            del _decoded[next(iter(_decoded))]
        _decoded[key] = binding
    return binding


def _decode(user_data: bytes) -> TLSBinding:
    if len(user_data) > _MAX_USER_DATA:
        raise BindingError(
            f"user_data is {len(user_data)} bytes; at most {_MAX_USER_DATA} accepted"
        )
    try:
        value = cbor2.loads(user_data, allow_duplicate_keys=False, max_depth=4)
    except Exception as error:  # cbor2 raises several types on hostile input
        raise BindingError(f"user_data is not CBOR: {error}") from None
    if not isinstance(value, dict) or set(value) != {"t", "spki", "bundle"}:
        raise BindingError("user_data must be a map with exactly the keys t, spki, bundle")
    tag, spki, bundle = value["t"], value["spki"], value["bundle"]
    if tag not in (TLS_TAG, TLS_INSECURE_TAG):
        raise BindingError(f"user_data tag is {tag!r}; expected {TLS_TAG!r}")
    if not isinstance(spki, bytes) or len(spki) != 48:
        raise BindingError("user_data spki must be a 48-byte SHA-384 digest")
    if not isinstance(bundle, bytes) or len(bundle) > 64:
        raise BindingError("user_data bundle must be a byte string of at most 64 bytes")
    binding = TLSBinding(tag, spki, bundle)
    if binding.encode() != user_data:
        raise BindingError("user_data is not deterministically encoded")
    return binding


def check_nonce(nonce: bytes) -> None:
    """Nonces for the attestation endpoint are 16 to 64 bytes (ARCHITECTURE.md §4)."""
    if not NONCE_MIN <= len(nonce) <= NONCE_MAX:
        raise BindingError(f"nonce must be {NONCE_MIN} to {NONCE_MAX} bytes, got {len(nonce)}")
