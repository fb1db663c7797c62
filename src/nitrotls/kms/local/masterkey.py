"""The master key that wraps every KMS key's material at rest.

Taken from ``$NITROTLS_KMS_MASTER_KEY`` (base64 of 32 bytes) when set, else from ``master.key``
in the KMS data directory, created on first use: 32 random bytes, base64, mode 0600, written to a
temporary file and hard-linked into place so two servers starting at once agree on one key. A
file that others can read is refused, like ssh refuses such private keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nitrotls.kms.local.errors import StorageError
from nitrotls.secrets import wipe

ENV_VAR = "NITROTLS_KMS_MASTER_KEY"
FILE_NAME = "master.key"
_WRAP_AAD = b"nitrotls-kms/material/1\x00"
_CHECK_LABEL = b"nitrotls-kms/master-check/1"


class MasterKey:
    """Wraps and unwraps key material (AES-256-GCM, the key id bound as associated data)."""

    def __init__(self, key: bytearray, origin: str) -> None:
        if len(key) != 32:
            raise StorageError(f"the master key from {origin} must be 32 bytes, found {len(key)}")
        self._aead = AESGCM(bytes(key))
        self.check_value = hmac.new(bytes(key), _CHECK_LABEL, hashlib.sha256).hexdigest()[:32]
        self.origin = origin
        wipe(key)

    @classmethod
    def load(cls, data_dir: Path) -> MasterKey:
        """The environment's key when set, else the file in ``data_dir`` (created when absent)."""
        encoded = os.environ.get(ENV_VAR)
        if encoded:
            return cls(_decode(encoded.strip(), f"${ENV_VAR}"), f"${ENV_VAR}")
        path = data_dir / FILE_NAME
        if not path.exists():
            _create(path)
        return cls(_read(path), str(path))

    def wrap(self, key_id: str, material: bytes | bytearray) -> bytes:
        iv = os.urandom(12)
        return iv + self._aead.encrypt(iv, bytes(material), _WRAP_AAD + key_id.encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> bytearray:
        try:
            return bytearray(
                self._aead.decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD + key_id.encode())
            )
        except (InvalidTag, ValueError):
            raise StorageError(
                f"the material of key {key_id} does not open under the master key from "
                f"{self.origin} (wrong master key, or a damaged store)"
            ) from None


def _decode(text: str, origin: str) -> bytearray:
    try:
        return bytearray(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise StorageError(f"the master key in {origin} is not valid base64") from None


def _read(path: Path) -> bytearray:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise StorageError(
            f"{path} is readable by other users (mode {mode & 0o777:o}); run chmod 600 on it"
        )
    return _decode(path.read_text().strip(), str(path))


def _create(path: Path) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    key = bytearray(os.urandom(32))
    try:
        os.write(fd, base64.b64encode(key) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        wipe(key)
    try:
        os.link(temp, path)  # fails if another process won the race: then its key stands
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
