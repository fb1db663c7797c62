"""The attestation document record and the limits AWS's attestation process sets on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# The NSM answers into a 12288-byte buffer; anything much larger is not a document.
MAX_DOCUMENT_BYTES = 16384
MAX_OPTIONAL_FIELD_BYTES = 1024
MAX_CERTIFICATE_BYTES = 1024
PCR_LENGTHS = frozenset((32, 48, 64))
MAX_PCRS = 32
COSE_ES384 = -35
SIGNATURE_BYTES = 96  # r || s, 48 bytes each, for P-384

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AttestationDocument:
    """Every field of a document's payload. Optional fields are ``None`` when absent or null."""

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs: Mapping[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None

    @property
    def is_debug(self) -> bool:
        """Debug-mode enclaves report PCR0, PCR1 and PCR2 as all zero."""
        return all(_is_zero(self.pcrs.get(index)) for index in (0, 1, 2))

    @property
    def timestamp(self) -> datetime:
        """The NSM's clock when it signed, as an aware UTC datetime."""
        return _EPOCH + timedelta(milliseconds=self.timestamp_ms)


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A syntactically valid document with the exact bytes its signature covers."""

    document: AttestationDocument
    protected: bytes
    payload: bytes
    signature: bytes


def _is_zero(value: bytes | None) -> bool:
    return value is not None and not any(value)
