"""The :class:`AttestationSource` protocol every producer of attestation documents keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from nitrotls.nsm.errors import NSMArgumentError, NSMInputTooLargeError, PCRIndexError

#: Producers keep user_data, nonce and public_key at this size or less (ARCHITECTURE §4);
#: verifiers accept up to 1024, so a document from nitrotls never sits at a verifier's edge.
MAX_FIELD_BYTES = 512
#: The NSM bank has 32 registers; 0..15 are measured at boot and read-only.
PCR_COUNT = 32
FIRST_APPLICATION_PCR = 16
PCR_LENGTH = 48
#: The largest GetRandom request served in one call (the device answers in small chunks).
MAX_RANDOM_BYTES = 65536


@dataclass(frozen=True)
class NSMDescription:
    """The NSM's DescribeNSM answer."""

    version_major: int
    version_minor: int
    version_patch: int
    module_id: str
    max_pcrs: int
    locked_pcrs: frozenset[int]
    digest: str


@runtime_checkable
class AttestationSource(Protocol):
    """Where COSE_Sign1 attestation documents come from: /dev/nsm or the simulated NSM."""

    def attest(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """A fresh signed document carrying the given optional fields."""
        ...

    def describe_pcr(self, index: int) -> tuple[bool, bytes]:
        """(locked, value) of one PCR."""
        ...

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """Extend PCR ``index`` with ``data``; returns its new value."""
        ...

    def lock_pcr(self, index: int) -> None:
        """Make PCR ``index`` read-only until the enclave ends."""
        ...

    def get_random(self, length: int) -> bytes:
        """``length`` bytes from the module's entropy source."""
        ...


def optional_field(name: str, value: object, *, minimum: int = 0) -> bytes | None:
    """Check one optional attest() field: bytes-like, ``minimum`` to :data:`MAX_FIELD_BYTES`.

    AWS's attestation process accepts a public_key of 1 byte or more only, so producers pass
    ``minimum=1`` for it rather than emit a document verifiers refuse.
    """
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray | memoryview):
        raise NSMArgumentError(f"{name} must be bytes or None, got {type(value).__name__}")
    data = bytes(value)
    if len(data) > MAX_FIELD_BYTES:
        raise NSMInputTooLargeError(
            f"{name} is {len(data)} bytes; nitrotls producers keep it at {MAX_FIELD_BYTES} "
            "bytes or less (hash larger values and attest the digest)"
        )
    if len(data) < minimum:
        raise NSMArgumentError(
            f"{name} must be at least {minimum} byte(s) or None, got {len(data)} bytes"
        )
    return data


def check_index(index: object) -> int:
    """A PCR index as the NSM API carries it (u16); range against the bank is checked later."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise NSMArgumentError(f"PCR index must be an integer, got {type(index).__name__}")
    if not 0 <= index <= 0xFFFF:
        raise PCRIndexError(f"PCR index must be between 0 and 65535, got {index}")
    return index


def check_random_length(length: object) -> int:
    """A GetRandom length: 0 .. :data:`MAX_RANDOM_BYTES`."""
    if isinstance(length, bool) or not isinstance(length, int):
        raise NSMArgumentError(f"random length must be an integer, got {type(length).__name__}")
    if not 0 <= length <= MAX_RANDOM_BYTES:
        raise NSMArgumentError(
            f"random length must be between 0 and {MAX_RANDOM_BYTES}, got {length}"
        )
    return length


def check_bytes(name: str, value: object) -> bytes:
    """A required bytes-like argument."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise NSMArgumentError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)
