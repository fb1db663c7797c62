"""The seal: AES-256-GCM over the PKCS#8 key, bound to the bundle id, name and public key.

The AAD and the KMS encryption context both name the bundle id, the bundle name and the SHA-384
of the public key, so a sealed key moved to another bundle, or a data key asked for under another
context, fails instead of opening.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nitrotls.bundle.errors import KeyMismatchError, SealError
from nitrotls.bundle.format import IV_BYTES, TAG_BYTES, SealedKey
from nitrotls.cbor import deterministic_dumps
from nitrotls.secrets import SecretBuffer, wipe

DATA_KEY_BYTES = 32
CONTEXT_BUNDLE = "nitrotls:bundle"
CONTEXT_NAME = "nitrotls:name"
CONTEXT_SPKI = "nitrotls:spki-sha384"


def spki_sha384(spki_der: bytes) -> bytes:
    """SHA-384 of a DER SubjectPublicKeyInfo: how the bundle names a public key."""
    return hashlib.sha384(spki_der).digest()


def seal_aad(bundle_id: bytes, name: str, spki_der: bytes) -> bytes:
    """AAD = deterministic CBOR {id, name, spki: SHA-384(SPKI DER)}."""
    return deterministic_dumps({"id": bundle_id, "name": name, "spki": spki_sha384(spki_der)})


def encryption_context(bundle_id: bytes, name: str, spki_der: bytes) -> dict[str, str]:
    """The KMS encryption context a bundle's data key is wrapped under."""
    return {
        CONTEXT_BUNDLE: bundle_id.hex(),
        CONTEXT_NAME: name,
        CONTEXT_SPKI: spki_sha384(spki_der).hex(),
    }


def public_spki(private_key_der: bytearray | bytes) -> bytes:
    """The DER SPKI of a PKCS#8 private key (the key object lives only inside this call)."""
    try:
        key = serialization.load_der_private_key(private_key_der, password=None)
    except (ValueError, TypeError) as error:
        raise KeyMismatchError(
            f"the sealed key is not a usable PKCS#8 private key: {error}"
        ) from None
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    del key
    return spki


def seal_key(
    private_key: bytearray,
    data_key: SecretBuffer,
    *,
    bundle_id: bytes,
    name: str,
    spki_der: bytes,
) -> SealedKey:
    """Seal a PKCS#8 key under ``data_key``; neither input is kept (the caller wipes both)."""
    return aead_seal(private_key, data_key, seal_aad(bundle_id, name, spki_der))


def open_sealed(
    sealed: SealedKey,
    data_key: SecretBuffer,
    *,
    bundle_id: bytes,
    name: str,
    spki_der: bytes,
) -> bytearray:
    """Open a bundle's sealed key and check it is the private key of ``spki_der``."""
    plain = aead_open(sealed, data_key, seal_aad(bundle_id, name, spki_der))
    check_key_matches(plain, spki_der)
    return plain


def aead_seal(plain: bytearray | bytes, data_key: SecretBuffer, aad: bytes) -> SealedKey:
    """AES-256-GCM with a fresh 12-byte IV; ``ct`` is the ciphertext followed by the tag."""
    _check_data_key(data_key)
    iv = os.urandom(IV_BYTES)
    encryptor = Cipher(algorithms.AES(data_key.data), modes.GCM(iv)).encryptor()
    encryptor.authenticate_additional_data(aad)
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    return SealedKey(iv=iv, ct=ciphertext + encryptor.tag)


def aead_open(sealed: SealedKey, data_key: SecretBuffer, aad: bytes) -> bytearray:
    """Decrypt into a fresh bytearray (never an immutable ``bytes``); wiped if the tag fails."""
    _check_data_key(data_key)
    body, tag = sealed.ct[:-TAG_BYTES], sealed.ct[-TAG_BYTES:]
    decryptor = Cipher(algorithms.AES(data_key.data), modes.GCM(sealed.iv, tag)).decryptor()
    decryptor.authenticate_additional_data(aad)
    plain = bytearray(len(body) + 15)  # update_into wants room for one block minus a byte
    try:
        written = decryptor.update_into(body, plain)
        decryptor.finalize()
    except InvalidTag:
        wipe(plain)
        raise SealError(
            "the sealed key does not open: wrong data key, or key.iv/key.ct or the bundle's "
            "id/name/leaf key changed since sealing"
        ) from None
    del plain[written:]  # the tail was never written: it only holds zeros
    return plain


def check_key_matches(plain: bytearray, spki_der: bytes) -> None:
    """Refuse (and wipe ``plain``) unless it is the PKCS#8 private key of ``spki_der``."""
    try:
        opened_spki = public_spki(plain)
    except KeyMismatchError:
        wipe(plain)
        raise
    if opened_spki != spki_der:
        wipe(plain)
        raise KeyMismatchError(
            "the opened private key does not belong to the leaf certificate "
            f"(leaf key SHA-384 {spki_sha384(spki_der).hex()[:16]}…, "
            f"opened key SHA-384 {spki_sha384(opened_spki).hex()[:16]}…)"
        )


def _check_data_key(data_key: SecretBuffer) -> None:
    if not isinstance(data_key, SecretBuffer) or len(data_key) != DATA_KEY_BYTES:
        raise SealError(f"a bundle data key is a {DATA_KEY_BYTES}-byte SecretBuffer")


def context_matches(context: Mapping[str, str], bundle_id: bytes, name: str, spki: bytes) -> bool:
    """Whether ``context`` is exactly the one :func:`encryption_context` derives."""
    return dict(context) == encryption_context(bundle_id, name, spki)
