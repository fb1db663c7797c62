"""Encoding documents exactly as the Nitro NSM does: an untagged COSE_Sign1 with ES384.

``[protected: bstr {1: -35}, unprotected: {}, payload: bstr, signature: bstr r||s (96 bytes)]``;
the payload is a definite-length CBOR map whose keys come in AWS's order. The signature covers
the COSE ``Sig_structure`` ``["Signature1", protected, h'', payload]`` (RFC 9052 §4.4).

Every document an enclave issues differs only in its timestamp and the three caller-chosen
fields, so :class:`PayloadTemplate` encodes the rest once and splices: the bytes are exactly what
``cbor2.dumps`` gives for the whole map (tests compare the two), without re-encoding the ~4 KB of
certificates per document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from nitrotls.cbor import head as cbor_head

PROTECTED_ES384 = cbor2.dumps({1: -35})
_COORDINATE = 48
_ES384 = ec.ECDSA(hashes.SHA384())
# CBOR heads of the fixed parts: array(4) "Signature1" bstr(protected) (Sig_structure), and
# array(4) bstr(protected) {} (the document), empty external_aad, bstr(96) for r||s.
_SIG_STRUCTURE_HEAD = b"\x84\x6aSignature1" + cbor2.dumps(PROTECTED_ES384) + b"\x40"
_DOCUMENT_HEAD = b"\x84" + cbor2.dumps(PROTECTED_ES384) + b"\xa0"
_SIGNATURE_HEAD = b"\x58\x60"


def encode_payload(
    *,
    module_id: str,
    timestamp_ms: int,
    pcrs: Mapping[int, bytes],
    certificate: bytes,
    cabundle: Sequence[bytes],
    public_key: bytes | None,
    user_data: bytes | None,
    nonce: bytes | None,
) -> bytes:
    """The attestation payload, keys in the order real documents carry them."""
    payload = {
        "module_id": module_id,
        "digest": "SHA384",
        "timestamp": timestamp_ms,
        "pcrs": {index: pcrs[index] for index in sorted(pcrs)},
        "certificate": certificate,
        "cabundle": list(cabundle),
        "public_key": public_key,
        "user_data": user_data,
        "nonce": nonce,
    }
    return bytes(cbor2.dumps(payload))


class PayloadTemplate:
    """:func:`encode_payload` with everything but the per-document fields encoded in advance."""

    __slots__ = ("_head", "_middle")

    def __init__(
        self,
        *,
        module_id: str,
        pcrs: Mapping[int, bytes],
        certificate: bytes,
        cabundle: Sequence[bytes],
    ) -> None:
        dumps = cbor2.dumps
        self._head = b"".join(  # map(9), then every entry up to the timestamp's value
            (
                b"\xa9",
                dumps("module_id"),
                dumps(module_id),
                dumps("digest"),
                dumps("SHA384"),
                dumps("timestamp"),
            )
        )
        self._middle = b"".join(
            (
                dumps("pcrs"),
                dumps({index: pcrs[index] for index in sorted(pcrs)}),
                dumps("certificate"),
                dumps(certificate),
                dumps("cabundle"),
                dumps(list(cabundle)),
                dumps("public_key"),
            )
        )

    def encode(
        self,
        timestamp_ms: int,
        public_key: bytes | None,
        user_data: bytes | None,
        nonce: bytes | None,
    ) -> bytes:
        return b"".join(
            (
                self._head,
                _uint(timestamp_ms),
                self._middle,
                _optional(public_key),
                b"\x69user_data",
                _optional(user_data),
                b"\x65nonce",
                _optional(nonce),
            )
        )


def sign1(key: ec.EllipticCurvePrivateKey, payload: bytes) -> bytes:
    """An untagged COSE_Sign1 over ``payload`` with ES384 and a raw r||s signature."""
    payload_head = cbor_head(0x40, len(payload))
    der = key.sign(b"".join((_SIG_STRUCTURE_HEAD, payload_head, payload)), _ES384)
    r, s = decode_dss_signature(der)
    return b"".join(
        (
            _DOCUMENT_HEAD,
            payload_head,
            payload,
            _SIGNATURE_HEAD,
            r.to_bytes(_COORDINATE, "big"),
            s.to_bytes(_COORDINATE, "big"),
        )
    )


def _optional(value: bytes | None) -> bytes:
    """A byte string or null, as cbor2 encodes it."""
    return b"\xf6" if value is None else cbor_head(0x40, len(value)) + value


def _uint(value: int) -> bytes:
    return cbor_head(0x00, value)
