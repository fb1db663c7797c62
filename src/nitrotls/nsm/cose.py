"""Encoding documents exactly as the Nitro NSM does: an untagged COSE_Sign1 with ES384.

``[protected: bstr {1: -35}, unprotected: {}, payload: bstr, signature: bstr r||s (96 bytes)]``;
the payload is a definite-length CBOR map whose keys come in AWS's order. The signature covers
the COSE ``Sig_structure`` ``["Signature1", protected, h'', payload]`` (RFC 9052 §4.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PROTECTED_ES384 = cbor2.dumps({1: -35})
_COORDINATE = 48


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


def sign1(key: ec.EllipticCurvePrivateKey, payload: bytes) -> bytes:
    """An untagged COSE_Sign1 over ``payload`` with ES384 and a raw r||s signature."""
    to_be_signed = cbor2.dumps(["Signature1", PROTECTED_ES384, b"", payload])
    r, s = decode_dss_signature(key.sign(to_be_signed, ec.ECDSA(hashes.SHA384())))
    signature = r.to_bytes(_COORDINATE, "big") + s.to_bytes(_COORDINATE, "big")
    return bytes(cbor2.dumps([PROTECTED_ES384, {}, payload, signature]))
