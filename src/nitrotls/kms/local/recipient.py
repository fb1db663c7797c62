"""Checking a Recipient: the attestation document that says who may receive a secret.

The document must chain to a trusted root (AWS's; the dev root only when the operator asked),
carry a valid signature, be fresh, and hold an RSA public key: the secret is sealed to that key
in a CMS envelope, so only the enclave that asked can open it. The PCRs of a document that passes
become the ``kms:RecipientAttestation:*`` condition keys; whether they are *acceptable* is the
key policy's decision, not this module's (as in AWS, a debug enclave's zero PCRs simply match no
policy that names real measurements).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from nitrotls.attestation import Verifier
from nitrotls.attestation.errors import AttestationError
from nitrotls.kms.local.errors import validation

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096
FUTURE_SKEW = timedelta(minutes=5)
AUDITED_PCRS = (0, 1, 2, 3, 4, 8)
_AUDITED = frozenset(AUDITED_PCRS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_FUTURE_SKEW_US = FUTURE_SKEW // _MICROSECOND


# What public_bytes(DER, SubjectPublicKeyInfo) writes for an RSA key of 2048 to 4096 bits:
# SEQUENCE (two length bytes) { AlgorithmIdentifier { rsaEncryption, NULL }, BIT STRING ...
_RSA_SPKI_HEAD = bytes.fromhex("3082")
_RSA_SPKI_ALGORITHM = bytes.fromhex("300d06092a864886f70d0101010500")


@dataclass(frozen=True)
class VerifiedRecipient:
    public_key: RSAPublicKey
    pcrs: Mapping[int, bytes]
    module_id: str
    spki: bytes | None = None  # the key's DER, when exactly what public_bytes would give

    def audited_pcrs(self) -> dict[int, bytes]:
        """PCRs 0-4 and 8 (those with a defined meaning), plus any other non-zero one."""
        return {
            index: value
            for index, value in self.pcrs.items()
            if index in _AUDITED or value.count(0) != len(value)  # not all zero
        }


class RecipientChecker:
    """Authenticates Recipient documents; thread-safe (the Verifier is)."""

    def __init__(self, verifier: Verifier, max_age: timedelta) -> None:
        self._verifier = verifier
        self._max_age = max_age
        self._max_age_us = max_age // _MICROSECOND

    def _check_age(self, when: datetime, timestamp_ms: int) -> None:
        """Refuse a document older than the limit or dated in the future.

        In whole microseconds (exactly what ``when - document.timestamp`` compares): making
        that timedelta and datetime cost more than the rest of this check, on every request.
        """
        age = (when - _EPOCH) // _MICROSECOND - timestamp_ms * 1000
        if age > self._max_age_us:
            raise validation(
                f"The Recipient attestation document is {age // 1_000_000} s old; this "
                f"server accepts documents up to {int(self._max_age.total_seconds())} s old."
            )
        if -age > _FUTURE_SKEW_US:
            raise validation("The Recipient attestation document is dated in the future.")

    def check(self, data: bytes, now: datetime | None = None) -> VerifiedRecipient:
        when = now or datetime.now(UTC)
        try:
            document = self._verifier.authenticate(data, at=when)
        except AttestationError as error:
            raise validation(f"The Recipient attestation document is not valid: {error}") from None
        self._check_age(when, document.timestamp_ms)
        der = document.public_key
        return VerifiedRecipient(
            _rsa_key(der), _frozen(document.pcrs), document.module_id, canonical_spki(der)
        )


def _frozen(pcrs: Mapping[int, bytes]) -> Mapping[int, bytes]:
    """A read-only map of the PCRs. A parsed document's already is one (the parser's proxy over
    a dict of its own), so it is taken as it is rather than copied on every request."""
    return pcrs if type(pcrs) is MappingProxyType else MappingProxyType(dict(pcrs))


def _rsa_key(der: bytes | None) -> RSAPublicKey:
    if not der:
        raise validation("The Recipient attestation document carries no public_key.")
    try:
        key = load_der_public_key(der)
    except ValueError:
        raise validation(
            "The public_key in the Recipient document is not a DER SubjectPublicKeyInfo."
        ) from None
    if not isinstance(key, RSAPublicKey):
        raise validation(
            "The public_key in the Recipient document must be an RSA key (RSAES_OAEP_SHA_256), "
            f"not {type(key).__name__}."
        )
    if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise validation(
            f"The Recipient RSA key has {key.key_size} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} "
            "are accepted."
        )
    return key


def canonical_spki(der: bytes | None) -> bytes | None:
    """``der`` (an RSA public key that loaded) if re-encoding the key would give these very bytes,
    else None.

    The envelope names its recipient by the SHA-256 of the key's encoding; taking the bytes the
    enclave sent spares encoding the key again on every request. The loader accepts only strict
    DER, and the one choice it leaves open is whether rsaEncryption carries its NULL parameters
    (``public_bytes`` writes them); so the bytes are taken as they are only when they do.
    """
    if der and der.startswith(_RSA_SPKI_HEAD) and der.startswith(_RSA_SPKI_ALGORITHM, 4):
        return der
    return None
