"""Open (and, for the local KMS, build) envelopes: RSA-OAEP-unwrapped AES-256-CBC content."""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers import Cipher

# AES by name, not as algorithms.AES: that module's attributes pass a Python hook (deprecations)
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.ciphers.modes import CBC

from nitrotls.kms.cms import ber, oids
from nitrotls.kms.cms.parse import BLOCK, parse_enveloped
from nitrotls.kms.errors import CMSFormatError
from nitrotls.secrets import wipe

CEK_BYTES = 32
DEFAULT_CHUNK = 1024


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def open_enveloped(ber_bytes: bytes, private_key: RSAPrivateKey) -> bytearray:
    """Parse, unwrap the content key with ``private_key`` and decrypt; the caller wipes the result.

    The content key only ever lives in a bytearray that is zeroed before returning (cryptography
    hands the RSA result back as ``bytes``; that short-lived copy is dropped at once).
    """
    parts = parse_enveloped(ber_bytes)
    try:
        unwrapped = private_key.decrypt(parts.encrypted_key, _oaep())
    except ValueError:
        raise CMSFormatError(
            "the content key does not unwrap with this private key (RSA-OAEP failed): the "
            "envelope is for another recipient or was altered"
        ) from None
    cek = bytearray(unwrapped)
    del unwrapped
    try:
        if len(cek) != CEK_BYTES:
            raise CMSFormatError(f"expected a {CEK_BYTES}-byte AES key, unwrapped {len(cek)}")
        return _decrypt_cbc(cek, parts.iv, parts.ciphertext)
    finally:
        wipe(cek)


def _decrypt_cbc(cek: bytearray, iv: bytes, ciphertext: bytes) -> bytearray:
    decryptor = Cipher(AES(cek), CBC(iv)).decryptor()
    padded = bytearray(len(ciphertext) + BLOCK - 1)
    try:
        written = decryptor.update_into(ciphertext, padded)
        decryptor.finalize()
        size = _unpadded_length(padded, written)
        return bytearray(memoryview(padded)[:size])
    finally:
        wipe(padded)


def _unpadded_length(buffer: bytearray, length: int) -> int:
    """PKCS#7: check every byte of the last block without branching on secret bytes."""
    pad = buffer[length - 1]
    bad = int(pad == 0) | int(pad > BLOCK)
    for index in range(1, BLOCK + 1):
        in_pad = ((index - pad - 1) >> 8) & 1
        bad |= in_pad * (buffer[length - index] ^ pad)
    if bad:
        raise CMSFormatError("the decrypted content has invalid PKCS#7 padding")
    return length - pad


def subject_key_identifier(public_key: RSAPublicKey) -> bytes:
    """SHA-256 of the recipient's DER SubjectPublicKeyInfo (32 bytes, like AWS's vectors)."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _sha256(spki)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def build_enveloped(
    plaintext: bytes | bytearray,
    recipient_public_key: RSAPublicKey,
    *,
    chunked: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    spki: bytes | None = None,
) -> bytes:
    """An envelope for ``recipient_public_key`` in the shape KMS sends (BER, indefinite lengths).

    ``chunked`` puts the ciphertext in a constructed ``[0]`` of OCTET STRING chunks (as in the
    first sdk-c vector), otherwise in a primitive ``[0]`` (as in the second). Every part that
    does not depend on the key, IV or ciphertext is encoded once, at import (the local KMS builds
    one envelope per Recipient request). ``spki``: the key's DER SubjectPublicKeyInfo exactly as
    ``public_bytes`` writes it, when the caller holds it already (spares encoding it again).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    fresh = os.urandom(CEK_BYTES + BLOCK)  # one system call for the key and the IV
    cek = bytearray(memoryview(fresh)[:CEK_BYTES])
    iv = fresh[CEK_BYTES:]
    del fresh
    try:
        encrypted_key = recipient_public_key.encrypt(bytes(cek), _OAEP)
        ciphertext = _encrypt_cbc(cek, iv, plaintext)
    finally:
        wipe(cek)
    ski = subject_key_identifier(recipient_public_key) if spki is None else _sha256(spki)
    recipient = _recipient_info(ski, encrypted_key)
    return b"".join(
        (
            _ENVELOPE_HEAD,
            ber.definite(0x20 | ber.TAG_SET, recipient),
            _CONTENT_HEAD,
            iv,
            _content(ciphertext, chunked, chunk_size),
            _EOC * 4,  # encrypted content info, enveloped data, [0], content info
        )
    )


def _encrypt_cbc(cek: bytearray, iv: bytes, plaintext: bytes | bytearray) -> bytes:
    """AES-256-CBC with PKCS#7 padding. The padding goes in as a second update, so no padded
    copy of the secret is made; the key goes in as the (wipeable) bytearray itself."""
    pad = BLOCK - len(plaintext) % BLOCK
    encryptor = Cipher(AES(cek), CBC(iv)).encryptor()
    return (
        encryptor.update(plaintext) + encryptor.update(bytes((pad,)) * pad) + encryptor.finalize()
    )


def _sequence(*parts: bytes) -> bytes:
    return ber.definite(0x20 | ber.TAG_SEQUENCE, b"".join(parts))


def _indefinite_head(identifier: int) -> bytes:
    return bytes([identifier | 0x20, 0x80])


def _oaep_algorithm() -> bytes:
    sha256 = _sequence(ber.definite(ber.TAG_OID, oids.SHA256), ber.definite(ber.TAG_NULL, b""))
    mgf = _sequence(ber.definite(ber.TAG_OID, oids.MGF1), sha256)
    params = _sequence(ber.definite(0xA0, sha256), ber.definite(0xA1, mgf))
    return _sequence(ber.definite(ber.TAG_OID, oids.RSAES_OAEP), params)


_OAEP = _oaep()
_EOC = b"\x00\x00"
_VERSION_2 = ber.definite(ber.TAG_INTEGER, b"\x02")
_OAEP_ALGORITHM = _oaep_algorithm()
# ContentInfo { envelopedData, [0] EnvelopedData { version 2, ... (indefinite lengths)
_ENVELOPE_HEAD = b"".join(
    (
        _indefinite_head(ber.TAG_SEQUENCE),
        ber.definite(ber.TAG_OID, oids.ENVELOPED_DATA),
        _indefinite_head(0xA0),
        _indefinite_head(ber.TAG_SEQUENCE),
        _VERSION_2,
    )
)
# EncryptedContentInfo { data, SEQUENCE { aes256-CBC, OCTET STRING: all but the IV's 16 bytes
_CONTENT_HEAD = b"".join(
    (
        _indefinite_head(ber.TAG_SEQUENCE),
        ber.definite(ber.TAG_OID, oids.DATA),
        _sequence(
            ber.definite(ber.TAG_OID, oids.AES256_CBC),
            ber.definite(ber.TAG_OCTET_STRING, bytes(BLOCK)),
        )[:-BLOCK],
    )
)


def _recipient_info(ski: bytes, encrypted_key: bytes) -> bytes:
    return _sequence(
        _VERSION_2,
        ber.definite(0x80, ski),
        _OAEP_ALGORITHM,
        ber.definite(ber.TAG_OCTET_STRING, encrypted_key),
    )


def _content(ciphertext: bytes, chunked: bool, size: int) -> bytes:
    if not chunked:
        return ber.definite(0x80, ciphertext)
    chunks = [
        ber.definite(ber.TAG_OCTET_STRING, ciphertext[start : start + size])
        for start in range(0, len(ciphertext), size)
    ]
    return b"".join((_indefinite_head(0xA0), *chunks, _EOC))
