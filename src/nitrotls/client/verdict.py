"""Decide whether an attestation document proves the TLS peer is a measured enclave.

The document must pass the caller's policy with the client's own nonce, and its user_data must
bind the SPKI of the very certificate this connection presented. The second check is what defeats
a relay: a man in the middle with its own valid certificate can forward the attestation request,
but the enclave's answer names the enclave's key, not the relay's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509

from nitrotls import binding
from nitrotls.attestation import AttestationDocument, Policy, Verifier
from nitrotls.client.errors import BindingMismatchError, InsecureServerError
from nitrotls.client.memo import Memo


@dataclass(frozen=True)
class Verdict:
    """What was proven about one TLS endpoint."""

    host: str
    port: int
    leaf_subject: str
    spki_sha384: bytes
    bundle_id: bytes
    document: AttestationDocument
    matched_set: int | None
    nonce: bytes | None
    insecure: bool
    valid_until: datetime


@dataclass(frozen=True, slots=True)
class LeafFacts:
    """What a verdict needs from the certificate a connection presented."""

    spki_sha384: bytes
    subject: str


def _leaf_facts(leaf_der: bytes) -> LeafFacts:
    leaf = x509.load_der_x509_certificate(leaf_der)
    return LeafFacts(binding.spki_sha384(leaf), leaf.subject.rfc4514_string())


def _not_after(certificate_der: bytes) -> datetime:
    return x509.load_der_x509_certificate(certificate_der).not_valid_after_utc


#: Per exact DER: a server presents the same leaf, and its enclave signs with the same
#: certificate for hours, so warm connections skip these parses.
leaf_facts: Memo[bytes, LeafFacts] = Memo(_leaf_facts)
_signing_not_after: Memo[bytes, datetime] = Memo(_not_after)


def judge(
    *,
    host: str,
    port: int,
    document: bytes,
    leaf_der: bytes,
    nonce: bytes | None,
    verifier: Verifier,
    policy: Policy,
    allow_insecure_dev: bool = False,
    at: datetime | None = None,
) -> Verdict:
    """Verify ``document`` against ``policy`` + ``nonce`` and bind it to ``leaf_der``.

    ``nonce=None`` (stored evidence only) keeps the policy's own nonce requirement, if any.
    """
    now = at or datetime.now(UTC)
    effective = policy if nonce is None else dataclasses.replace(policy, nonce=nonce)
    verified = verifier.verify(document, effective, at=now)
    bound = binding.decode(verified.user_data)
    leaf = leaf_facts(leaf_der)
    presented = leaf.spki_sha384
    if bound.spki_sha384 != presented:
        raise BindingMismatchError(
            f"the enclave attested certificate key {bound.spki_sha384.hex()[:16]}… but this "
            f"connection presented {presented.hex()[:16]}…: something between you and the "
            "enclave terminates TLS"
        )
    if bound.insecure and not allow_insecure_dev:
        raise InsecureServerError(
            "the server runs the insecure bundled-certificate development mode "
            "(its key was baked into the image); pass allow_insecure_dev to accept it anyway"
        )
    return Verdict(
        host=host,
        port=port,
        leaf_subject=leaf.subject,
        spki_sha384=presented,
        bundle_id=bound.bundle_id,
        document=verified,
        matched_set=matched_set(policy, verified),
        nonce=nonce,
        insecure=bound.insecure,
        valid_until=_valid_until(verified, policy, now),
    )


def matched_set(policy: Policy, document: AttestationDocument) -> int | None:
    """Index of the first accepted PCR set the document satisfies (None when none was required)."""
    for index, pcr_set in enumerate(policy.accepted_pcrs):
        if all(document.pcrs.get(i) == value for i, value in pcr_set.items()):
            return index
    return None


def _valid_until(document: AttestationDocument, policy: Policy, now: datetime) -> datetime:
    """A verdict lives no longer than the document's signing certificate or the policy's max age."""
    until = _signing_not_after(document.certificate)  # the verifier has just proven it
    if policy.max_age is not None:
        until = min(until, document.timestamp + policy.max_age)
    return until
