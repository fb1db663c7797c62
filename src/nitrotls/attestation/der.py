"""Just enough DER to slice a certificate into the exact bytes chain checks compare and verify.

The issuer signed the TBSCertificate bytes as they appear in the certificate, so those bytes are
verified as received (no re-encoding). Names are compared as encoded: an issuer field is a copy
of its issuer's subject field, byte for byte, in every chain a Nitro NSM produces.
"""

from __future__ import annotations

from dataclasses import dataclass

_SEQUENCE = 0x30
_VERSION = 0xA0  # [0] EXPLICIT Version
_INTEGER = 0x02
_BIT_STRING = 0x03


@dataclass(frozen=True, slots=True)
class CertificateParts:
    """Slices of a certificate's DER (each a complete TLV)."""

    tbs: bytes
    signature_algorithm: bytes  # outer AlgorithmIdentifier
    tbs_signature_algorithm: bytes  # the copy inside the TBSCertificate
    issuer: bytes
    subject: bytes


def certificate_parts(der: bytes) -> CertificateParts:
    """Slice ``der``; raise ValueError when it is not a DER Certificate SEQUENCE."""
    body, end = _expect(der, 0, _SEQUENCE, len(der))
    if end != len(der):
        raise ValueError("trailing bytes after the certificate")
    tbs_body, tbs_end = _expect(der, body, _SEQUENCE, end)
    _, algorithm_end = _expect(der, tbs_end, _SEQUENCE, end)
    _, signature_end = _expect(der, algorithm_end, _BIT_STRING, end)
    if signature_end != end:
        raise ValueError("unexpected fields after the signature")
    cursor = tbs_body
    if der[cursor] == _VERSION:
        cursor = _expect(der, cursor, _VERSION, tbs_end)[1]
    cursor = _expect(der, cursor, _INTEGER, tbs_end)[1]
    inner_algorithm_end = _expect(der, cursor, _SEQUENCE, tbs_end)[1]
    issuer_end = _expect(der, inner_algorithm_end, _SEQUENCE, tbs_end)[1]
    validity_end = _expect(der, issuer_end, _SEQUENCE, tbs_end)[1]
    subject_end = _expect(der, validity_end, _SEQUENCE, tbs_end)[1]
    return CertificateParts(
        tbs=der[body:tbs_end],
        signature_algorithm=der[tbs_end:algorithm_end],
        tbs_signature_algorithm=der[cursor:inner_algorithm_end],
        issuer=der[inner_algorithm_end:issuer_end],
        subject=der[validity_end:subject_end],
    )


def _expect(data: bytes, offset: int, tag: int, limit: int) -> tuple[int, int]:
    """(start of contents, end of element) of the TLV at ``offset``, which must have ``tag``."""
    if offset + 2 > limit or data[offset] != tag:
        raise ValueError(f"expected DER tag {tag:#04x} at offset {offset}")
    first = data[offset + 1]
    if first < 0x80:
        start, length = offset + 2, first
    else:
        count = first & 0x7F
        if not 1 <= count <= 3 or offset + 2 + count > limit:
            raise ValueError(f"unsupported DER length at offset {offset}")
        start = offset + 2 + count
        length = int.from_bytes(data[offset + 2 : start], "big")
    end = start + length
    if end > limit:
        raise ValueError(f"DER element at offset {offset} runs past its container")
    return start, end
