"""The attestation document record and its strict parser.

A Nitro attestation document is a COSE_Sign1 structure (RFC 9052), tagged (18) or not, whose
payload is a CBOR map. Parsing checks syntax only, as AWS's attestation process states it; the
signature and the chain are checked by :mod:`nitrotls.attestation.verifier`. The raw protected
header and payload bytes are kept so the signature is checked over exactly what was received.
"""

from __future__ import annotations

import binascii
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import cbor2

from nitrotls.attestation.errors import (
    DocumentEncodingError,
    NotAnEnclaveDocumentError,
    UnsupportedAlgorithmError,
)

# The NSM answers into a 12288-byte buffer; anything much larger is not a document.
MAX_DOCUMENT_BYTES = 16384
MAX_OPTIONAL_FIELD_BYTES = 1024
MAX_CERTIFICATE_BYTES = 1024
PCR_LENGTHS = frozenset((32, 48, 64))
MAX_PCRS = 32
COSE_ES384 = -35
SIGNATURE_BYTES = 96  # r || s, 48 bytes each, for P-384

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIMESTAMP_MS = 253402300799999  # 9999-12-31T23:59:59.999Z: datetime's limit
_ALGORITHM_NAMES = {-7: "ES256", -35: "ES384", -36: "ES512", -8: "EdDSA", -37: "PS256"}
_REQUIRED = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
_OPTIONAL = ("public_key", "user_data", "nonce")
_KNOWN_KEYS = frozenset(_REQUIRED + _OPTIONAL)
_COSE_SIGN1_TAG = 18
_HEX = re.compile(rb"[0-9a-fA-F\s]+")


@dataclass(frozen=True, slots=True)
class AttestationDocument:
    """Every field of a document's payload. Optional fields are ``None`` when absent or null."""

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs: Mapping[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None

    @property
    def is_debug(self) -> bool:
        """Debug-mode enclaves report PCR0, PCR1 and PCR2 as all zero."""
        return all(_is_zero(self.pcrs.get(index)) for index in (0, 1, 2))

    @property
    def timestamp(self) -> datetime:
        """The NSM's clock when it signed, as an aware UTC datetime."""
        return _EPOCH + timedelta(milliseconds=self.timestamp_ms)


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A syntactically valid document with the exact bytes its signature covers."""

    document: AttestationDocument
    protected: bytes
    payload: bytes
    signature: bytes


def parse_document(data: bytes) -> ParsedDocument:
    """Parse a COSE_Sign1 attestation document; raise a typed error for anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DocumentEncodingError(f"expected document bytes, found {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DocumentEncodingError("expected a COSE_Sign1 document, found empty input")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentEncodingError(
            f"expected at most {MAX_DOCUMENT_BYTES} bytes, found {len(data)}"
        )
    protected, unprotected, payload, signature = _cose_parts(_decode(data, "document", 6))
    _check_headers(protected, unprotected)
    if len(signature) != SIGNATURE_BYTES:
        raise DocumentEncodingError(
            f"expected a {SIGNATURE_BYTES}-byte ES384 signature, found {len(signature)} bytes"
        )
    document = _payload_document(_decode(payload, "payload", 3))
    return ParsedDocument(document, protected, payload, signature)


def unwrap_document(data: bytes) -> bytes:
    """Raw CBOR as is; base64 (standard or URL-safe) or hex text decoded to the CBOR bytes."""
    stripped = data.strip()
    if not stripped or stripped[0] in (0x84, 0xD2):
        return data
    try:
        if _HEX.fullmatch(stripped):
            return bytes.fromhex(stripped.decode("ascii"))
        compact = b"".join(stripped.split()).replace(b"-", b"+").replace(b"_", b"/")
        return binascii.a2b_base64(compact + b"=" * (-len(compact) % 4), strict_mode=True)
    except (ValueError, binascii.Error):
        return data


def _decode(data: bytes, what: str, max_depth: int) -> Any:
    """Decode exactly one CBOR item: no trailing bytes, no duplicate keys, no semantic tags."""
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            max_depth=max_depth,
            allow_duplicate_keys=False,
            semantic_decoders=_REFUSED_TAGS,
            tag_hook=_tag_hook,
        )
        value = decoder.decode()
    except Exception as error:  # cbor2 raises many types on hostile input; all mean "malformed"
        raise DocumentEncodingError(f"{what} is not valid CBOR: {_short(error)}") from error
    if stream.tell() != len(data):
        raise DocumentEncodingError(
            f"{what}: expected one CBOR item, found {len(data) - stream.tell()} trailing bytes"
        )
    return value


def _refuse_tag(value: Any, immutable: bool) -> Any:
    raise ValueError("semantic tags are not used in attestation documents")


def _tag_hook(tag: cbor2.CBORTag, immutable: bool) -> Any:
    if tag.tag != _COSE_SIGN1_TAG:
        raise ValueError(f"unexpected CBOR tag {tag.tag}")
    return tag


# Tags cbor2 would otherwise turn into ordinary values (bignums into ints, and so on).
_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261)
_REFUSED_TAGS = {tag: _refuse_tag for tag in (*_SEMANTIC_TAGS, 1004, 43000, 55799)}


def _short(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _cose_parts(value: Any) -> tuple[bytes, Any, bytes, bytes]:
    if isinstance(value, cbor2.CBORTag):
        value = value.value  # the tag hook admits only 18 (COSE_Sign1)
    if not isinstance(value, list | tuple) or len(value) != 4:
        found = f"{len(value)}-element array" if isinstance(value, list | tuple) else "other"
        raise DocumentEncodingError(
            f"expected a COSE_Sign1 array of 4 elements, found {found} ({type(value).__name__})"
        )
    protected, unprotected, payload, signature = value
    for name, part in (("protected", protected), ("payload", payload), ("signature", signature)):
        if type(part) is not bytes:
            raise DocumentEncodingError(
                f"COSE_Sign1 {name}: expected a byte string, found {type(part).__name__}"
            )
    return protected, unprotected, payload, signature


def _check_headers(protected: bytes, unprotected: Any) -> None:
    if not isinstance(unprotected, Mapping):  # a frozendict when under the COSE tag
        raise DocumentEncodingError(
            f"COSE_Sign1 unprotected header: expected a map, found {type(unprotected).__name__}"
        )
    if 1 in unprotected:
        raise DocumentEncodingError("COSE_Sign1: the algorithm must be in the protected header")
    header = _decode(protected, "protected header", 2) if protected else {}
    if not isinstance(header, dict):
        raise DocumentEncodingError(
            f"protected header: expected a map, found {type(header).__name__}"
        )
    if 2 in header:
        raise DocumentEncodingError("protected header: critical parameters are not understood")
    algorithm = header.get(1)
    if type(algorithm) is not int or algorithm != COSE_ES384:
        name = repr(algorithm)[:40]
        if type(algorithm) is int:
            name = _ALGORITHM_NAMES.get(algorithm, f"alg {algorithm}")
        raise UnsupportedAlgorithmError(
            f"protected header: expected alg ES384 ({COSE_ES384}), found {name}"
        )


def _payload_document(payload: Any) -> AttestationDocument:
    if not isinstance(payload, dict):
        raise DocumentEncodingError(f"payload: expected a map, found {type(payload).__name__}")
    if "nitrotpm_pcrs" in payload:
        raise NotAnEnclaveDocumentError(
            "expected a Nitro Enclaves document, found a NitroTPM document (nitrotpm_pcrs)"
        )
    unknown = [key for key in payload if key not in _KNOWN_KEYS]
    if unknown:
        raise DocumentEncodingError(f"payload: unexpected key {repr(unknown[0])[:60]}")
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
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
    return tuple(_certificate(f"cabundle[{i}]", item) for i, item in enumerate(value))


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


def _is_zero(value: bytes | None) -> bool:
    return value is not None and not any(value)
