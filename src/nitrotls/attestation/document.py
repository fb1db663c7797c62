"""The strict COSE_Sign1 parser for attestation documents.

A Nitro attestation document is a COSE_Sign1 structure (RFC 9052), tagged (18) or not, whose
payload is a CBOR map. Parsing checks syntax only, as AWS's attestation process states it; the
signature and the chain are checked by :mod:`nitrotls.attestation.verifier`. The raw protected
header and payload bytes are kept so the signature is checked over exactly what was received.
"""

from __future__ import annotations

import binascii
import io
import re
from typing import Any

import cbor2

from nitrotls.attestation.errors import DocumentEncodingError, UnsupportedAlgorithmError
from nitrotls.attestation.fields import payload_document
from nitrotls.attestation.record import (  # re-exported: callers import them from here
    COSE_ES384,
    MAX_CERTIFICATE_BYTES,
    MAX_DOCUMENT_BYTES,
    MAX_OPTIONAL_FIELD_BYTES,
    MAX_PCRS,
    PCR_LENGTHS,
    SIGNATURE_BYTES,
    AttestationDocument,
    ParsedDocument,
)

__all__ = [
    "COSE_ES384",
    "MAX_CERTIFICATE_BYTES",
    "MAX_DOCUMENT_BYTES",
    "MAX_OPTIONAL_FIELD_BYTES",
    "MAX_PCRS",
    "PCR_LENGTHS",
    "SIGNATURE_BYTES",
    "AttestationDocument",
    "ParsedDocument",
    "parse_document",
    "unwrap_document",
]

_ALGORITHM_NAMES = {-7: "ES256", -35: "ES384", -36: "ES512", -8: "EdDSA", -37: "PS256"}
_COSE_SIGN1_TAG = 18
_ES384_HEADER = b"\xa1\x01\x38\x22"  # {1: -35}
_HEX = re.compile(rb"[0-9a-fA-F\s]+")


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
    document = payload_document(_decode(payload, "payload", 3))
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
    if not isinstance(unprotected, dict | cbor2.frozendict):  # frozendict: under the COSE tag
        raise DocumentEncodingError(
            f"COSE_Sign1 unprotected header: expected a map, found {type(unprotected).__name__}"
        )
    if 1 in unprotected:
        raise DocumentEncodingError("COSE_Sign1: the algorithm must be in the protected header")
    if protected == _ES384_HEADER:
        return  # the header every NSM sends: skip decoding it
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
