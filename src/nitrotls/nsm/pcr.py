"""PCR arithmetic as the Nitro NSM and nitro-cli do it, and a bank of 32 registers.

A PCR starts as 48 zero bytes and is extended as ``PCR_new = SHA-384(PCR_old || data)``.
nitro-cli's measurements (PCR0/1/2/8) are one extension by the SHA-384 of the measured bytes:
``SHA-384(zeros || SHA-384(bytes))`` (its ``EifHasher`` without cache, then
``tpm_extend_finalize_reset``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from nitrotls.nsm.errors import PCRIndexError, PCRLockedError
from nitrotls.nsm.source import FIRST_APPLICATION_PCR, PCR_COUNT, PCR_LENGTH

ZERO_PCR = bytes(PCR_LENGTH)


def extend(old: bytes, data: bytes) -> bytes:
    """One PCR extension: SHA-384(old || data)."""
    return hashlib.sha384(old + data).digest()


def measurement(digest: bytes) -> bytes:
    """A boot-time PCR from the SHA-384 of the measured bytes (zero register, extended once)."""
    return extend(ZERO_PCR, digest)


def measure_bytes(data: bytes) -> bytes:
    """What ``nitro-cli pcr --input`` reports for a file holding ``data``."""
    return measurement(hashlib.sha384(data).digest())


def instance_pcr(instance_id: str) -> bytes:
    """PCR4 as AWS computes it: SHA-384(48 zero bytes || ASCII parent instance id)."""
    return extend(ZERO_PCR, instance_id.encode("ascii"))


class PCRBank:
    """32 SHA-384 registers: 0..15 set at boot and locked, 16..31 extendable until locked.

    Not thread-safe on its own; :class:`~nitrotls.nsm.simulated.SimulatedNSM` guards it.
    """

    def __init__(self, boot: Mapping[int, bytes]) -> None:
        self._values = [ZERO_PCR] * PCR_COUNT
        for index, value in boot.items():
            if not 0 <= index < FIRST_APPLICATION_PCR or len(value) != PCR_LENGTH:
                raise ValueError(f"boot PCR {index} must be 0..15 with 48 bytes")
            self._values[index] = bytes(value)
        self._locked = set(range(FIRST_APPLICATION_PCR))

    def _checked(self, index: int) -> int:
        if not 0 <= index < PCR_COUNT:
            raise PCRIndexError(
                f"PCR index must be between 0 and {PCR_COUNT - 1} on this module, got {index}",
                code="InvalidIndex",
            )
        return index

    def describe(self, index: int) -> tuple[bool, bytes]:
        index = self._checked(index)
        return index in self._locked, self._values[index]

    def extend(self, index: int, data: bytes) -> bytes:
        index = self._checked(index)
        if index in self._locked:
            raise PCRLockedError(
                f"PCR{index} is locked (read-only); only unlocked PCRs "
                f"{FIRST_APPLICATION_PCR}..{PCR_COUNT - 1} can be extended",
                code="ReadOnlyIndex",
            )
        self._values[index] = extend(self._values[index], data)
        return self._values[index]

    def lock(self, index: int) -> None:
        self._locked.add(self._checked(index))

    def lock_range(self, count: int) -> None:
        """Lock PCRs [0, count) like the NSM's LockPCRs."""
        if not 0 <= count <= PCR_COUNT:
            raise PCRIndexError(f"lock range must be 0..{PCR_COUNT}, got {count}")
        self._locked.update(range(count))

    @property
    def locked(self) -> frozenset[int]:
        return frozenset(self._locked)

    def document_pcrs(self) -> dict[int, bytes]:
        """What a document carries: PCRs 0..15, plus any of 16..31 that have been locked."""
        indices: Iterable[int] = sorted(
            set(range(FIRST_APPLICATION_PCR)) | {i for i in self._locked}
        )
        return {index: self._values[index] for index in indices}
