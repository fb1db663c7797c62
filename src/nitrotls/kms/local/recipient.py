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


@dataclass(frozen=True)
class VerifiedRecipient:
    public_key: RSAPublicKey
    pcrs: Mapping[int, bytes]
    module_id: str

    def audited_pcrs(self) -> dict[int, bytes]:
        """PCRs 0-4 and 8 (those with a defined meaning), plus any other non-zero one."""
        return {
            index: value
            for index, value in self.pcrs.items()
            if index in AUDITED_PCRS or value.lstrip(b"\x00")  # not all zero
        }


class RecipientChecker:
    """Authenticates Recipient documents; thread-safe (the Verifier is)."""

    def __init__(self, verifier: Verifier, max_age: timedelta) -> None:
        self._verifier = verifier
        self._max_age = max_age

    def check(self, data: bytes, now: datetime | None = None) -> VerifiedRecipient:
        when = now or datetime.now(UTC)
        try:
            document = self._verifier.authenticate(data, at=when)
        except AttestationError as error:
            raise validation(f"The Recipient attestation document is not valid: {error}") from None
        age = when - document.timestamp
        if age > self._max_age:
            raise validation(
                f"The Recipient attestation document is {int(age.total_seconds())} s old; this "
                f"server accepts documents up to {int(self._max_age.total_seconds())} s old."
            )
        if -age > FUTURE_SKEW:
            raise validation("The Recipient attestation document is dated in the future.")
        return VerifiedRecipient(
            _rsa_key(document.public_key), MappingProxyType(dict(document.pcrs)), document.module_id
        )


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
