"""The payload's fields, checked as AWS's attestation process states the syntax.

Types are checked exactly (``type(x) is int``): CBOR booleans decode to Python bools, which are
ints to ``isinstance``, and must not pass as timestamps or PCR indices.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from nitrotls.attestation.errors import (
    DocumentEncodingError,
    NotAnEnclaveDocumentError,
    UnsupportedAlgorithmError,
)
from nitrotls.attestation.record import (
    MAX_CERTIFICATE_BYTES,
    MAX_OPTIONAL_FIELD_BYTES,
    MAX_PCRS,
    PCR_LENGTHS,
    AttestationDocument,
)

_MAX_TIMESTAMP_MS = 253402300799999  # 9999-12-31T23:59:59.999Z: datetime's limit
_REQUIRED = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
_OPTIONAL = ("public_key", "user_data", "nonce")
_REQUIRED_KEYS = frozenset(_REQUIRED)
_KNOWN_KEYS = frozenset(_REQUIRED + _OPTIONAL)


def payload_document(payload: Any) -> AttestationDocument:
    """The record for a decoded payload map, or the typed reason it is malformed."""
    if not isinstance(payload, dict):
        raise DocumentEncodingError(f"payload: expected a map, found {type(payload).__name__}")
    if "nitrotpm_pcrs" in payload:
        raise NotAnEnclaveDocumentError(
            "expected a Nitro Enclaves document, found a NitroTPM document (nitrotpm_pcrs)"
        )
    keys = payload.keys()
    if not keys <= _KNOWN_KEYS:
        unknown = sorted(repr(key)[:60] for key in keys - _KNOWN_KEYS)
        raise DocumentEncodingError(f"payload: unexpected key {unknown[0]}")
    if not keys >= _REQUIRED_KEYS:
        missing = [key for key in _REQUIRED if key not in keys]
        raise DocumentEncodingError(f"payload: missing required field {missing[0]!r}")
    return AttestationDocument(
        module_id=_module_id(payload["module_id"]),
        digest=_digest(payload["digest"]),
        timestamp_ms=_timestamp(payload["timestamp"]),
        pcrs=_pcrs(payload["pcrs"]),
        certificate=_certificate("certificate", payload["certificate"]),
        cabundle=_cabundle(payload["cabundle"]),
        public_key=_optional("public_key", payload.get("public_key"), minimum=1),
        user_data=_optional("user_data", payload.get("user_data"), minimum=0),
        nonce=_optional("nonce", payload.get("nonce"), minimum=0),
    )


def _module_id(value: Any) -> str:
    if type(value) is not str or not value:
        raise DocumentEncodingError(f"module_id: expected non-empty text, found {_kind(value)}")
    return value


def _digest(value: Any) -> str:
    if type(value) is not str:
        raise DocumentEncodingError(f"digest: expected text, found {_kind(value)}")
    if value != "SHA384":
        raise UnsupportedAlgorithmError(f"digest: expected SHA384, found {value[:40]!r}")
    return value


def _timestamp(value: Any) -> int:
    if type(value) is not int or not 0 < value <= _MAX_TIMESTAMP_MS:
        raise DocumentEncodingError(
            f"timestamp: expected milliseconds since the epoch, found {_kind(value)}"
        )
    return value


def _pcrs(value: Any) -> Mapping[int, bytes]:
    if not isinstance(value, dict) or not 1 <= len(value) <= MAX_PCRS:
        size = len(value) if isinstance(value, dict) else _kind(value)
        raise DocumentEncodingError(f"pcrs: expected a map of 1 to {MAX_PCRS} PCRs, found {size}")
    for index, pcr in value.items():
        if type(index) is not int or not 0 <= index < MAX_PCRS:
            raise DocumentEncodingError(f"pcrs: expected indices 0-31, found {repr(index)[:40]}")
        if type(pcr) is not bytes or len(pcr) not in PCR_LENGTHS:
            raise DocumentEncodingError(
                f"PCR{index}: expected 32, 48 or 64 bytes, found {_kind(pcr)}"
            )
    return MappingProxyType(dict(value))


def _certificate(name: str, value: Any) -> bytes:
    if type(value) is not bytes or not 1 <= len(value) <= MAX_CERTIFICATE_BYTES:
        raise DocumentEncodingError(
            f"{name}: expected 1 to {MAX_CERTIFICATE_BYTES} bytes of DER, found {_kind(value)}"
        )
    return value


def _cabundle(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not value:
        raise DocumentEncodingError(
            f"cabundle: expected a non-empty array of certificates, found {_kind(value)}"
        )
    for position, item in enumerate(value):
        if type(item) is not bytes or not 1 <= len(item) <= MAX_CERTIFICATE_BYTES:
            _certificate(f"cabundle[{position}]", item)  # raises with the details
    return tuple(value)


def _optional(name: str, value: Any, *, minimum: int) -> bytes | None:
    if value is None:
        return None
    if type(value) is not bytes or not minimum <= len(value) <= MAX_OPTIONAL_FIELD_BYTES:
        raise DocumentEncodingError(
            f"{name}: expected null or {minimum} to {MAX_OPTIONAL_FIELD_BYTES} bytes,"
            f" found {_kind(value)}"
        )
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bytes | str | list | dict):
        return f"{type(value).__name__} of length {len(value)}"
    if type(value) is int:
        return f"integer {value}" if abs(value) < 10**20 else "a huge integer"
    return type(value).__name__
