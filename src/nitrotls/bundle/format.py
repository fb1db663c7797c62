"""Bundle v1: the record, its deterministic encoding, and a strict decoder.

A bundle travels through untrusted hands (the host, the store), so the decoder accepts exactly
one encoding of exactly one shape: unknown versions and unknown or missing fields are refused,
every field is type- and size-checked, and the input must re-encode to the same bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import cbor2

from nitrotls.bundle.errors import BundleFormatError, UnsupportedVersionError
from nitrotls.cbor import deterministic_dumps

VERSION = 1
ALG = "A256GCM"
BINDING_TYPE = "nitrotls/bundle/1"
ID_BYTES = 16
IV_BYTES = 12
TAG_BYTES = 16
MAX_BUNDLE_BYTES = 256 * 1024
MAX_CHAIN = 8
MAX_CERT_BYTES = 16 * 1024
MAX_SEALED_BYTES = 16 * 1024
MAX_BLOB_BYTES = 8 * 1024
MAX_DOC_BYTES = 32 * 1024
MAX_KEY_ID_CHARS = 2048
MAX_CONTEXT_ENTRIES = 16
MAX_CONTEXT_CHARS = 1024
MAX_UINT = 2**63 - 1
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")

_TOP_FIELDS = frozenset({"v", "id", "seq", "name", "created", "chain", "key", "dek", "gen"})
_KEY_FIELDS = frozenset({"alg", "iv", "ct"})
_DEK_FIELDS = frozenset({"kms_key_id", "blob", "context"})


def check_name(name: object) -> str:
    """A bundle name: 1-63 characters of letters, digits, '.', '_' and '-' (safe as a path part)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BundleFormatError(
            f"bundle name must be 1-63 letters, digits, '.', '_' or '-' (starting with a letter "
            f"or digit); found {name!r}"
        )
    return name


@dataclass(frozen=True)
class SealedKey:
    """The PKCS#8 private key under AES-256-GCM: ``ct`` is ciphertext followed by the tag."""

    iv: bytes
    ct: bytes
    alg: str = ALG

    def __post_init__(self) -> None:
        _check(self.alg == ALG, f"key.alg must be {ALG!r}, found {self.alg!r}")
        _check_bytes("key.iv", self.iv, IV_BYTES, IV_BYTES)
        _check_bytes("key.ct", self.ct, TAG_BYTES + 1, MAX_SEALED_BYTES)

    def to_cbor(self) -> dict[str, Any]:
        return {"alg": self.alg, "iv": self.iv, "ct": self.ct}


@dataclass(frozen=True)
class WrappedDataKey:
    """Where the data key lives: the KMS key, its CiphertextBlob, and the encryption context."""

    kms_key_id: str
    blob: bytes
    context: Mapping[str, str]

    def __post_init__(self) -> None:
        _check(
            isinstance(self.kms_key_id, str) and 0 < len(self.kms_key_id) <= MAX_KEY_ID_CHARS,
            f"dek.kms_key_id must be 1-{MAX_KEY_ID_CHARS} characters",
        )
        _check_bytes("dek.blob", self.blob, 1, MAX_BLOB_BYTES)
        _check(
            isinstance(self.context, Mapping) and 0 < len(self.context) <= MAX_CONTEXT_ENTRIES,
            f"dek.context must be a map of 1-{MAX_CONTEXT_ENTRIES} entries",
        )
        for key, value in self.context.items():
            _check(
                isinstance(key, str) and isinstance(value, str),
                "dek.context must map text to text",
            )
            _check(
                0 < len(key) <= MAX_CONTEXT_CHARS and len(value) <= MAX_CONTEXT_CHARS,
                f"dek.context entries are limited to {MAX_CONTEXT_CHARS} characters",
            )
        object.__setattr__(self, "context", MappingProxyType(dict(self.context)))

    def to_cbor(self) -> dict[str, Any]:
        return {"kms_key_id": self.kms_key_id, "blob": self.blob, "context": dict(self.context)}


@dataclass(frozen=True)
class Bundle:
    """One bundle. ``gen`` is ``None`` until :func:`nitrotls.bundle.bind` adds the document."""

    bundle_id: bytes
    seq: int
    name: str
    created_ms: int
    chain: tuple[bytes, ...]
    key: SealedKey
    dek: WrappedDataKey
    gen: bytes | None = None
    version: int = field(default=VERSION)

    def __post_init__(self) -> None:
        if self.version != VERSION:
            raise UnsupportedVersionError(f"bundle version {self.version!r} is not {VERSION}")
        _check_bytes("id", self.bundle_id, ID_BYTES, ID_BYTES)
        _check_uint("seq", self.seq)
        _check_uint("created", self.created_ms)
        check_name(self.name)
        _check(
            isinstance(self.chain, tuple) and 0 < len(self.chain) <= MAX_CHAIN,
            f"chain must hold 1-{MAX_CHAIN} certificates",
        )
        for index, cert in enumerate(self.chain):
            _check_bytes(f"chain[{index}]", cert, 1, MAX_CERT_BYTES)
        _check(isinstance(self.key, SealedKey), "key must be a SealedKey")
        _check(isinstance(self.dek, WrappedDataKey), "dek must be a WrappedDataKey")
        if self.gen is not None:
            _check_bytes("gen", self.gen, 1, MAX_DOC_BYTES)

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.created_ms / 1000, tz=UTC)

    @property
    def id_hex(self) -> str:
        return self.bundle_id.hex()

    def _fields(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "id": self.bundle_id,
            "seq": self.seq,
            "name": self.name,
            "created": self.created_ms,
            "chain": list(self.chain),
            "key": self.key.to_cbor(),
            "dek": self.dek.to_cbor(),
        }

    def binding_bytes(self) -> bytes:
        """The deterministic encoding of every field but ``gen``: what the generator signs."""
        return deterministic_dumps(self._fields())

    def binding_user_data(self) -> bytes:
        """The generator document's user_data for this bundle: {t, h: SHA-384(binding bytes)}."""
        digest = hashlib.sha384(self.binding_bytes()).digest()
        return deterministic_dumps({"t": BINDING_TYPE, "h": digest})

    def encode(self) -> bytes:
        """The bundle as stored: deterministic CBOR including ``gen``."""
        if self.gen is None:
            raise BundleFormatError("an unbound bundle has no encoding; bind it first")
        return deterministic_dumps({**self._fields(), "gen": self.gen})


def decode(data: bytes | bytearray | memoryview) -> Bundle:
    """Parse stored bytes into a :class:`Bundle`, refusing anything but canonical v1."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BundleFormatError(f"a bundle is bytes, found {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise BundleFormatError("the bundle is empty")
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleFormatError(f"the bundle is {len(raw)} bytes; the limit is {MAX_BUNDLE_BYTES}")
    try:
        value = cbor2.loads(raw)
    except Exception as error:  # cbor2 raises several types for malformed input; all mean "bad"
        raise BundleFormatError(f"the bundle is not valid CBOR: {error}") from None
    if not isinstance(value, dict):
        raise BundleFormatError(f"a bundle is a CBOR map, found {type(value).__name__}")
    version = value.get("v")
    if type(version) is not int:
        raise BundleFormatError("the bundle has no integer version field 'v'")
    if version != VERSION:
        raise UnsupportedVersionError(
            f"bundle format version {version} is not supported (this nitrotls reads v{VERSION})"
        )
    bundle = _from_map(value)
    if bundle.encode() != raw:
        raise BundleFormatError("the bundle is not in deterministic CBOR encoding")
    return bundle


def _from_map(value: dict[Any, Any]) -> Bundle:
    _exact_fields("bundle", value, _TOP_FIELDS)
    key = _expect("key", value["key"], dict)
    dek = _expect("dek", value["dek"], dict)
    _exact_fields("key", key, _KEY_FIELDS)
    _exact_fields("dek", dek, _DEK_FIELDS)
    chain = _expect("chain", value["chain"], list)
    return Bundle(
        bundle_id=_expect("id", value["id"], bytes),
        seq=_expect("seq", value["seq"], int),
        name=_expect("name", value["name"], str),
        created_ms=_expect("created", value["created"], int),
        chain=tuple(_expect(f"chain[{i}]", c, bytes) for i, c in enumerate(chain)),
        key=SealedKey(
            alg=_expect("key.alg", key["alg"], str),
            iv=_expect("key.iv", key["iv"], bytes),
            ct=_expect("key.ct", key["ct"], bytes),
        ),
        dek=WrappedDataKey(
            kms_key_id=_expect("dek.kms_key_id", dek["kms_key_id"], str),
            blob=_expect("dek.blob", dek["blob"], bytes),
            context=_expect("dek.context", dek["context"], dict),
        ),
        gen=_expect("gen", value["gen"], bytes),
    )


def _exact_fields(where: str, value: dict[Any, Any], expected: frozenset[str]) -> None:
    keys = set(value)
    unknown = sorted(repr(k) for k in keys - expected)
    missing = sorted(expected - keys)
    if unknown:
        raise BundleFormatError(f"{where} has unknown field(s) {', '.join(unknown)}")
    if missing:
        raise BundleFormatError(f"{where} lacks field(s) {', '.join(missing)}")


def _expect(where: str, value: Any, kind: type) -> Any:
    # ``type() is`` rather than isinstance: a CBOR boolean must not pass as an integer.
    if type(value) is not kind:
        raise BundleFormatError(f"{where} must be {kind.__name__}, found {type(value).__name__}")
    return value


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise BundleFormatError(message)


def _check_bytes(where: str, value: object, low: int, high: int) -> None:
    if type(value) is not bytes:
        raise BundleFormatError(f"{where} must be bytes, found {type(value).__name__}")
    if not low <= len(value) <= high:
        size = f"{low}" if low == high else f"{low}-{high}"
        raise BundleFormatError(f"{where} must be {size} bytes, found {len(value)}")


def _check_uint(where: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= MAX_UINT:
        raise BundleFormatError(f"{where} must be an unsigned integer below 2^63, found {value!r}")
