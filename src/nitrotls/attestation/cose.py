"""The COSE_Sign1 ES384 signature check (RFC 9052 §4.4), over the bytes exactly as received."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from nitrotls.attestation.document import SIGNATURE_BYTES, ParsedDocument
from nitrotls.attestation.errors import SignatureError

ES384 = ec.ECDSA(hashes.SHA384())
# CBOR array(4), text(10) "Signature1": the fixed start of every Sig_structure for COSE_Sign1.
_SIG_STRUCTURE_HEAD = b"\x84\x6aSignature1"
_EMPTY_EXTERNAL_AAD = b"\x40"


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """``["Signature1", protected, h'', payload]`` in CBOR, with the headers' exact bytes."""
    return b"".join(
        (
            _SIG_STRUCTURE_HEAD,
            _bstr_head(len(protected)),
            protected,
            _EMPTY_EXTERNAL_AAD,
            _bstr_head(len(payload)),
            payload,
        )
    )


def der_signature(raw: bytes) -> bytes:
    """COSE carries ECDSA as r || s; cryptography wants a DER SEQUENCE of two INTEGERs."""
    half = SIGNATURE_BYTES // 2
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


def verify_signature(parsed: ParsedDocument, key: ec.EllipticCurvePublicKey) -> None:
    """Raise :class:`SignatureError` unless the leaf key signed this exact document."""
    try:
        key.verify(
            der_signature(parsed.signature),
            sig_structure(parsed.protected, parsed.payload),
            ES384,
        )
    except InvalidSignature:
        raise SignatureError(
            "expected a valid ES384 signature by the leaf certificate's key over the document;"
            " the signature does not verify (document altered or not signed by that key)"
        ) from None


def _bstr_head(length: int) -> bytes:
    """The shortest CBOR head of a byte string of ``length`` bytes (major type 2)."""
    if length < 24:
        return bytes((0x40 | length,))
    if length < 0x100:
        return bytes((0x58, length))
    if length < 0x10000:
        return b"\x59" + length.to_bytes(2, "big")
    if length < 0x100000000:
        return b"\x5a" + length.to_bytes(4, "big")
    return b"\x5b" + length.to_bytes(8, "big")
