"""The store contract every backend keeps: names, records, and the abstract :class:`BundleStore`.

The store is untrusted and knows nothing of bundle contents; what it must get right is
publication: an object is complete before any pointer names it, the latest pointer moves by
compare-and-swap so two writers never both win, and a lease has one holder at a time.
"""

from __future__ import annotations

import builtins
import json
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple

from nitrotls.store.errors import (
    InvalidLeaseError,
    InvalidStoreNameError,
    StoreCorruptError,
    StoreTooLargeError,
)

MAX_BUNDLE_BYTES = 8 * 1024 * 1024
MAX_OBJECT_BYTES = 1024 * 1024
MAX_CHALLENGE_BYTES = 4096
MAX_LEASE_TTL = 86400.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_HOLDER = re.compile(r"[\x21-\x7e]{1,256}")


class Latest(NamedTuple):
    """The newest bundle of a name: its id and its bytes."""

    id: str
    data: bytes


@dataclass(frozen=True)
class Lease:
    """Proof of holding a name's lease; ``token`` changes with every acquisition."""

    name: str
    holder: str
    token: str
    expires_at: float


def check_name(value: str, what: str = "name") -> str:
    """Refuse anything but ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}`` (no separators, no dot-dot)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidStoreNameError(
            f"invalid store {what} {value!r}: expected 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return value


def check_token(value: str) -> str:
    """HTTP-01 tokens are base64url (RFC 8555 §8.3): refuse anything else."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise InvalidStoreNameError(
            f"invalid challenge token {value!r}: expected 1-256 base64url characters"
        )
    return value


def check_holder(value: str) -> str:
    """Lease holders are printable ASCII without spaces, so records stay unambiguous."""
    if not isinstance(value, str) or not _HOLDER.fullmatch(value):
        raise InvalidStoreNameError(
            f"invalid lease holder {value!r}: expected 1-256 printable ASCII characters, no spaces"
        )
    return value


def check_ttl(ttl: float) -> float:
    if not isinstance(ttl, int | float) or not 0 < ttl <= MAX_LEASE_TTL:
        raise InvalidLeaseError(
            f"lease ttl must be in (0, {MAX_LEASE_TTL:.0f}] seconds, got {ttl!r}"
        )
    return float(ttl)


def check_size(data: bytes, limit: int, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) > limit:
        raise StoreTooLargeError(f"{what} is {len(data)} bytes; the store accepts at most {limit}")
    return bytes(data)


def new_token() -> str:
    return secrets.token_hex(16)


def encode_lease(lease: Lease) -> bytes:
    record = {"holder": lease.holder, "token": lease.token, "expires_at": lease.expires_at}
    return json.dumps(record, sort_keys=True).encode()


def decode_lease(name: str, raw: bytes, where: str) -> Lease:
    """Parse a lease record; anything unexpected is corruption, never a silent free lease."""
    try:
        record = json.loads(raw)
        holder, token, expires_at = record["holder"], record["token"], record["expires_at"]
    except (ValueError, KeyError, TypeError) as error:
        raise StoreCorruptError(
            f"lease record {where} is not valid JSON with holder/token/expires_at"
        ) from error
    if not (isinstance(holder, str) and isinstance(token, str)) or not isinstance(
        expires_at, int | float
    ):
        raise StoreCorruptError(f"lease record {where} has fields of the wrong type")
    return Lease(name=name, holder=holder, token=token, expires_at=float(expires_at))


def decode_pointer(raw: bytes, where: str) -> str:
    """A latest pointer holds one bundle id; anything else is corruption."""
    try:
        text = raw.decode("ascii").strip()
        return check_name(text, "bundle id")
    except (UnicodeDecodeError, InvalidStoreNameError) as error:
        raise StoreCorruptError(f"latest pointer {where} does not hold a bundle id") from error


class BundleStore(ABC):
    """Where bundles, leases, HTTP-01 tokens and small opaque objects live."""

    @abstractmethod
    def put(self, name: str, bundle_id: str, data: bytes, *, expected_previous: str | None) -> None:
        """Publish ``data`` as ``bundle_id``; make it latest iff latest is ``expected_previous``."""

    @abstractmethod
    def latest(self, name: str) -> Latest | None:
        """The newest bundle of ``name``, or ``None`` when nothing was published."""

    @abstractmethod
    def get(self, name: str, bundle_id: str) -> bytes:
        """The bytes of one published bundle."""

    @abstractmethod
    def list(self, name: str) -> list[str]:
        """Ids of every bundle object stored under ``name``, sorted."""

    @abstractmethod
    def names(self) -> builtins.list[str]:
        """Names that have a latest bundle, sorted."""

    @abstractmethod
    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease:
        """Take ``name``'s lease for ``ttl`` seconds, unless another holder has it."""

    @abstractmethod
    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a held lease; :class:`LeaseLostError` when it is no longer ours."""

    @abstractmethod
    def release_lease(self, lease: Lease) -> None:
        """Give the lease up (no-op when it is no longer ours)."""

    @abstractmethod
    def put_challenge(self, token: str, key_authorization: str) -> None:
        """Publish an HTTP-01 key authorization for the responder to serve."""

    @abstractmethod
    def get_challenge(self, token: str) -> str | None:
        """The key authorization for ``token``, or ``None``."""

    @abstractmethod
    def delete_challenge(self, token: str) -> None:
        """Remove a token (idempotent)."""

    @abstractmethod
    def put_object(self, key: str, data: bytes) -> None:
        """Atomically store (or replace) a small opaque object."""

    @abstractmethod
    def get_object(self, key: str) -> bytes | None:
        """An opaque object, or ``None``."""

    @abstractmethod
    def delete_object(self, key: str) -> None:
        """Remove an opaque object (idempotent)."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release backend resources."""

    @contextmanager
    def lease(self, name: str, holder: str, ttl: float) -> Iterator[Lease]:
        """Hold ``name``'s lease for the ``with`` block; released on exit, whatever happens."""
        held = self.acquire_lease(name, holder, ttl)
        try:
            yield held
        finally:
            self.release_lease(held)

    def __enter__(self) -> BundleStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_challenge_value(key_authorization: str) -> bytes:
    """Key authorizations are ``token.thumbprint`` (ASCII, short) or a DNS digest."""
    if not isinstance(key_authorization, str) or not key_authorization.isascii():
        raise InvalidStoreNameError("key authorization must be an ASCII string")
    return check_size(key_authorization.encode(), MAX_CHALLENGE_BYTES, "key authorization")
