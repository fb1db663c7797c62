"""The local KMS ciphertext blob, version 1.

``b"NTKM" | 0x01 | key id (16 bytes, the UUID) | IV (12) | AES-256-GCM ciphertext and tag``.

The associated data is the 21-byte header followed by the deterministic CBOR encoding of the
encryption context (a text → text map; ``{}`` when none), so a blob opens only under the key it
names and only with exactly the context it was made with. The key id travels in the clear, as in
AWS's blobs, so Decrypt does not need a KeyId. Blobs from AWS do not open here and vice versa.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nitrotls.cbor import deterministic_dumps
from nitrotls.cbor import head as cbor_head
from nitrotls.kms.local.errors import invalid_ciphertext
from nitrotls.kms.local.fields import uuid_text

MAGIC = b"NTKM"
VERSION = 1
HEADER_LEN = len(MAGIC) + 1 + 16
IV_LEN = 12
TAG_LEN = 16
MIN_LEN = HEADER_LEN + IV_LEN + TAG_LEN


@dataclass(frozen=True)
class Blob:
    key_id: str
    header: bytes
    iv: bytes
    sealed: bytes  # ciphertext || tag


def encode_context(context: Mapping[str, str]) -> bytes:
    """The context's deterministic CBOR: exactly ``deterministic_dumps(dict(context))``.

    Every Decrypt and Encrypt encodes one, so a text-to-text map (all a validated encryption
    context can be) is encoded here directly: a map head, then each key and value as a text
    string, in the order of the encoded keys' bytes (RFC 8949 §4.2.1). A third of the cost of the
    general encoder; anything else takes the general one.
    """
    pairs = []
    for key, value in context.items():
        if type(key) is not str or type(value) is not str:
            return deterministic_dumps(dict(context))
        pairs.append((_cbor_text(key), _cbor_text(value)))
    pairs.sort()
    return cbor_head(0xA0, len(pairs)) + b"".join([key + value for key, value in pairs])


def _cbor_text(text: str) -> bytes:
    data = text.encode()
    return cbor_head(0x60, len(data)) + data


def seal(
    aead: AESGCM, key_id: str, context: Mapping[str, str], plaintext: bytes | bytearray
) -> bytes:
    header = MAGIC + bytes([VERSION]) + uuid.UUID(key_id).bytes
    iv = os.urandom(IV_LEN)
    return header + iv + aead.encrypt(iv, bytes(plaintext), header + encode_context(context))


def parse(data: bytes) -> Blob:
    """Split a blob; anything that is not a v1 local-KMS blob is InvalidCiphertextException."""
    if len(data) < MIN_LEN or not data.startswith(MAGIC):
        raise invalid_ciphertext("The ciphertext is not a blob made by this local KMS.")
    if data[len(MAGIC)] != VERSION:
        raise invalid_ciphertext(f"Unsupported ciphertext blob version {data[len(MAGIC)]}.")
    header = data[:HEADER_LEN]
    key_id = uuid_text(header[len(MAGIC) + 1 :].hex())
    return Blob(key_id, header, data[HEADER_LEN : HEADER_LEN + IV_LEN], data[HEADER_LEN + IV_LEN :])


def open_blob(aead: AESGCM, blob: Blob, context: Mapping[str, str]) -> bytearray:
    """The plaintext, or InvalidCiphertextException (tampering, or not this context)."""
    try:
        return bytearray(aead.decrypt(blob.iv, blob.sealed, blob.header + encode_context(context)))
    except InvalidTag:
        raise invalid_ciphertext(
            "The ciphertext does not open: it was altered, or the encryption context differs "
            "from the one used to encrypt it."
        ) from None
