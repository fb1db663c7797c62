"""Reading request members strictly: types, lengths and ranges as the KMS API defines them.

Every problem is a ValidationException naming the member, so a caller sees what to fix and bad
input never reaches the key handling code.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any

from nitrotls.kms.local.errors import validation

MAX_CONTEXT_CHARS = 8192
RECIPIENT_ALGORITHM = "RSAES_OAEP_SHA_256"


def text(
    body: Mapping[str, Any],
    name: str,
    *,
    required: bool = False,
    min_len: int = 1,
    max_len: int = 2048,
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise validation(
                f"1 validation error detected: Value null at '{name}' failed to satisfy "
                "constraint: Member must not be null"
            )
        return None
    if not isinstance(value, str):
        raise validation(f"'{name}' must be a string.")
    if not min_len <= len(value) <= max_len:
        raise validation(
            f"1 validation error detected: Value at '{name}' failed to satisfy constraint: "
            f"Member must have length between {min_len} and {max_len}"
        )
    return value


def required_text(body: Mapping[str, Any], name: str, *, max_len: int = 2048) -> str:
    value = text(body, name, required=True, max_len=max_len)
    return value or ""


def blob(
    body: Mapping[str, Any], name: str, *, required: bool = False, max_len: int = 6144
) -> bytes | None:
    value = body.get(name)
    if value is None:
        if required:
            raise validation(f"'{name}' is required.")
        return None
    if not isinstance(value, str):
        raise validation(f"'{name}' must be a base64 string.")
    try:
        data = decode_base64(value)
    except (binascii.Error, ValueError):
        raise validation(f"'{name}' is not valid base64.") from None
    if not 1 <= len(data) <= max_len:
        raise validation(
            f"1 validation error detected: Value at '{name}' failed to satisfy constraint: "
            f"Member must have length between 1 and {max_len}"
        )
    return data


def decode_base64(text: str) -> bytes:
    """``base64.b64decode(text, validate=True)`` without its Python layer: the same bytes, the
    same inputs refused (a non-ASCII ``str`` raises ``ValueError`` in both)."""
    return binascii.a2b_base64(text, strict_mode=True)


def encode_base64(data: bytes | bytearray) -> str:
    """``base64.b64encode(data).decode()`` without its Python layer."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def uuid_text(hex32: str) -> str:
    """``str(uuid.UUID(hex=hex32))`` for 32 lower-case hex digits, without building the UUID
    (key ids and request ids are formatted on every call)."""
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def required_blob(body: Mapping[str, Any], name: str, *, max_len: int = 6144) -> bytes:
    return blob(body, name, required=True, max_len=max_len) or b""


def integer(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise validation(f"'{name}' must be an integer.")
    if not low <= value <= high:
        raise validation(
            f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
            f"constraint: Member must have value between {low} and {high}"
        )
    return value


def flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise validation(f"'{name}' must be true or false.")
    return value


def choice(body: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if value not in allowed:
        raise validation(
            f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return str(value)


def encryption_context(body: Mapping[str, Any]) -> dict[str, str]:
    value = body.get("EncryptionContext")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise validation("'EncryptionContext' must be a map of strings to strings.")
    size = 0
    for key, item in value.items():
        if not isinstance(item, str) or not key:
            raise validation("'EncryptionContext' keys must be non-empty and values strings.")
        size += len(key) + len(item)
    if size > MAX_CONTEXT_CHARS:
        raise validation(f"'EncryptionContext' is longer than {MAX_CONTEXT_CHARS} characters.")
    return dict(value)


def recipient(body: Mapping[str, Any]) -> bytes | None:
    """The attestation document of a Recipient member, or None when there is none."""
    value = body.get("Recipient")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise validation("'Recipient' must be an object.")
    algorithm = value.get("KeyEncryptionAlgorithm")
    if algorithm != RECIPIENT_ALGORITHM:
        raise validation(
            f"Recipient.KeyEncryptionAlgorithm must be {RECIPIENT_ALGORITHM}, not {algorithm!r}."
        )
    document = blob(value, "AttestationDocument", max_len=262144)
    if document is None:
        raise validation("Recipient.AttestationDocument is required.")
    return document
