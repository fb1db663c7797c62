"""The verifier: document → chain → signature → policy, with a per-instance cache of proven certs.

One :class:`Verifier` is meant to live as long as the process: it caches the pinned root and
every certificate link it has proven, so documents from one enclave cost one signature check.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from nitrotls.attestation.chain import DEFAULT_CACHE_ENTRIES, ChainVerifier
from nitrotls.attestation.cose import verify_signature
from nitrotls.attestation.document import AttestationDocument, ParsedDocument, parse_document
from nitrotls.attestation.errors import PolicyError
from nitrotls.attestation.policy import Policy

# SHA-256 of the DER of the AWS Nitro Enclaves Root-G1 certificate, as AWS publishes it.
AWS_NITRO_ROOT_G1_SHA256 = bytes.fromhex(
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
)


class Verifier:
    """Authenticates Nitro attestation documents against pinned roots. Thread-safe."""

    def __init__(
        self,
        trusted_roots: Iterable[bytes] = (AWS_NITRO_ROOT_G1_SHA256,),
        *,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        roots = frozenset(bytes(root) for root in trusted_roots)
        if not roots or any(len(root) != 32 for root in roots):
            raise PolicyError(
                "trusted_roots: expected one or more 32-byte SHA-256 fingerprints of root"
                f" certificates, found {sorted(len(root) for root in roots)} byte lengths"
            )
        self.trusted_roots = roots
        self._chain = ChainVerifier(roots, cache_entries)

    def verify(
        self, data: bytes, policy: Policy, at: datetime | None = None
    ) -> AttestationDocument:
        """Authenticate ``data`` as of ``at`` (default now), then apply ``policy``."""
        when = instant(at)
        document = self.authenticate_parsed(parse_document(data), when)
        policy.check(document, when)
        return document

    def authenticate(self, data: bytes, at: datetime | None = None) -> AttestationDocument:
        """Chain, validity at ``at`` and signature only: no policy (the caller applies one)."""
        return self.authenticate_parsed(parse_document(data), instant(at))

    def authenticate_parsed(
        self, parsed: ParsedDocument, at: datetime | None = None
    ) -> AttestationDocument:
        """As :meth:`authenticate`, for a document already parsed (to inspect it first)."""
        document = parsed.document
        key = self._chain.verify(document.certificate, document.cabundle, instant(at))
        verify_signature(parsed, key)
        return document

    def clear_cache(self) -> None:
        """Forget every proven certificate."""
        self._chain.clear()


def instant(at: datetime | None) -> datetime:
    """``at`` as an aware datetime: now when omitted, UTC when naive."""
    if at is None:
        return datetime.now(UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
