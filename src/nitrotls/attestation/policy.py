"""What an authenticated document must also satisfy to be accepted.

A genuine document only proves *some* enclave produced it; the policy says *which* enclaves
(measurements), *when* (age), and *for what* (nonce, user_data). It fails closed: a policy that
checks no measurement cannot be built without ``allow_any_measurement=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from nitrotls.attestation.document import MAX_PCRS, PCR_LENGTHS, AttestationDocument
from nitrotls.attestation.errors import (
    DebugEnclaveError,
    DocumentTooOldError,
    ModuleMismatchError,
    NonceMismatchError,
    PCRMismatchError,
    PolicyError,
    UserDataMismatchError,
    hex_prefix,
)
from nitrotls.errors import NitroTLSError

# How far a document's timestamp may run ahead of the verifier's clock when an age is enforced.
FUTURE_TOLERANCE = timedelta(minutes=5)

UserDataCheck = Callable[[bytes | None], bool]


@dataclass(frozen=True)
class Policy:
    """Acceptance rules; ``accepted_pcrs`` holds alternatives (any one set matching accepts)."""

    accepted_pcrs: tuple[Mapping[int, bytes], ...] = ()
    allow_debug: bool = False
    max_age: timedelta | None = None
    nonce: bytes | None = None
    user_data: bytes | UserDataCheck | None = None
    module_id: str | None = None
    pcr4: bytes | None = None
    allow_any_measurement: bool = False

    def __post_init__(self) -> None:
        sets = tuple(_pcr_set(number, pcrs) for number, pcrs in enumerate(self.accepted_pcrs))
        object.__setattr__(self, "accepted_pcrs", sets)
        if not sets and not self.allow_any_measurement:
            raise PolicyError(
                "expected at least one accepted PCR set, found none: a policy must name the"
                " measurements it accepts (or pass allow_any_measurement=True explicitly)"
            )
        if self.max_age is not None and self.max_age < timedelta(0):
            raise PolicyError(f"max_age: expected a non-negative duration, found {self.max_age}")
        if self.pcr4 is not None and len(self.pcr4) not in PCR_LENGTHS:
            raise PolicyError(f"pcr4: expected 32, 48 or 64 bytes, found {len(self.pcr4)}")

    @property
    def checks_measurement(self) -> bool:
        """Whether any code measurement is required (False only with allow_any_measurement)."""
        return bool(self.accepted_pcrs)

    def matched_set(self, document: AttestationDocument) -> int | None:
        """Index of the first accepted PCR set the document matches (None if none or no sets)."""
        for number, pcrs in enumerate(self.accepted_pcrs):
            if not _mismatch(pcrs, document.pcrs):
                return number
        return None

    def check(self, document: AttestationDocument, at: datetime) -> None:
        """Raise the typed reason the document is not acceptable at instant ``at``."""
        if document.is_debug and not self.allow_debug:
            raise DebugEnclaveError(
                "expected a production enclave, found a debug-mode one (PCR0, PCR1, PCR2 all"
                " zero, console open to the parent instance); allow debug only in development"
            )
        self._check_measurements(document)
        self._check_age(document, at)
        self._check_nonce(document)
        self._check_user_data(document)

    def _check_measurements(self, document: AttestationDocument) -> None:
        if self.accepted_pcrs:
            mismatches = [_mismatch(pcrs, document.pcrs) for pcrs in self.accepted_pcrs]
            if all(mismatches):
                detail = "; ".join(f"set {n + 1}: {m}" for n, m in enumerate(mismatches[:3]))
                raise PCRMismatchError(
                    f"measurements match none of the {len(mismatches)} accepted PCR set(s):"
                    f" {detail}"
                )
        if self.pcr4 is not None and document.pcrs.get(4) != self.pcr4:
            raise PCRMismatchError(
                f"PCR4 (instance): expected {hex_prefix(self.pcr4)},"
                f" found {hex_prefix(document.pcrs.get(4))}"
            )
        if self.module_id is not None and document.module_id != self.module_id:
            raise ModuleMismatchError(
                f"module_id: expected {self.module_id!r}, found {document.module_id[:80]!r}"
            )

    def _check_age(self, document: AttestationDocument, at: datetime) -> None:
        if self.max_age is None:
            return
        age = at - document.timestamp
        if age > self.max_age:
            raise DocumentTooOldError(
                f"expected a document at most {self.max_age} old, found one {age} old"
                f" (signed {document.timestamp.isoformat()}, checked at {at.isoformat()})"
            )
        if -age > FUTURE_TOLERANCE:
            raise DocumentTooOldError(
                f"expected a document signed before {at.isoformat()}, found one signed"
                f" {document.timestamp.isoformat()} (clock skew beyond {FUTURE_TOLERANCE})"
            )

    def _check_nonce(self, document: AttestationDocument) -> None:
        if self.nonce is not None and document.nonce != self.nonce:
            raise NonceMismatchError(
                f"nonce: expected {hex_prefix(self.nonce)}, found {hex_prefix(document.nonce)}"
                " (a replayed or unrelated document)"
            )

    def _check_user_data(self, document: AttestationDocument) -> None:
        expected = self.user_data
        if expected is None:
            return
        if isinstance(expected, bytes | bytearray):
            if document.user_data != bytes(expected):
                raise UserDataMismatchError(
                    f"user_data: expected {hex_prefix(bytes(expected))},"
                    f" found {hex_prefix(document.user_data)}"
                )
            return
        try:
            accepted = expected(document.user_data)
        except NitroTLSError:
            raise
        except Exception as error:  # a caller's predicate failing means "not accepted"
            raise UserDataMismatchError(
                f"user_data: the policy's check failed ({type(error).__name__}: {error})"[:300]
            ) from error
        if accepted is not True:
            raise UserDataMismatchError(
                f"user_data: expected a value the policy's check accepts, found"
                f" {hex_prefix(document.user_data)}"
            )


def _pcr_set(number: int, pcrs: Mapping[int, bytes]) -> Mapping[int, bytes]:
    if not isinstance(pcrs, Mapping) or not pcrs:
        raise PolicyError(
            f"accepted PCR set {number + 1}: expected a non-empty map of index to value,"
            " found an empty one (it would accept any enclave)"
        )
    for index, value in pcrs.items():
        if type(index) is not int or not 0 <= index < MAX_PCRS:
            raise PolicyError(f"accepted PCR set {number + 1}: index {index!r} is not 0-31")
        if not isinstance(value, bytes) or len(value) not in PCR_LENGTHS:
            raise PolicyError(
                f"accepted PCR set {number + 1}: PCR{index} must be 32, 48 or 64 bytes"
            )
    return MappingProxyType(dict(pcrs))


def _mismatch(expected: Mapping[int, bytes], found: Mapping[int, bytes]) -> str:
    """The first difference between a required set and the document's PCRs, or ''."""
    for index in sorted(expected):
        if found.get(index) != expected[index]:
            return (
                f"PCR{index} expected {hex_prefix(expected[index])},"
                f" found {hex_prefix(found.get(index))}"
            )
    return ""
