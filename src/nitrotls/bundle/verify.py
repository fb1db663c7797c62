"""Verifying a bundle before anything is asked of KMS, and opening it after.

Order: the format, the generator's document (chain, signature, PCR policy, debug, as of its own
timestamp, since Nitro leaf certificates live hours), the binding hash, the sequence floor, the
KMS context, then the certificate chain at the caller's instant. Every check that can be done
without KMS is done here, so a tampered bundle never costs a KMS call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nitrotls.attestation import AttestationDocument, Policy, Verifier, parse_document
from nitrotls.attestation.errors import AttestationError
from nitrotls.bundle.chain import check_chain
from nitrotls.bundle.errors import (
    BindingError,
    ContextMismatchError,
    GeneratorDocumentError,
    StaleBundleError,
)
from nitrotls.bundle.format import Bundle, decode
from nitrotls.bundle.seal import encryption_context, open_sealed, spki_sha384
from nitrotls.secrets import SecretBuffer

if TYPE_CHECKING:
    from nitrotls.nsm import AttestationSource

# How far the generator's document may stand from the bundle's ``created`` stamp: it is made
# right after building, so minutes are generous; the past side allows for clock skew.
BIND_WINDOW_BEFORE = timedelta(minutes=5)
BIND_WINDOW_AFTER = timedelta(hours=1)
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose every KMS-free check passed; what :func:`open_key` accepts."""

    bundle: Bundle
    raw: bytes
    generator: AttestationDocument
    leaf: x509.Certificate
    spki_der: bytes
    domains: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def seq(self) -> int:
        return self.bundle.seq

    @property
    def context(self) -> Mapping[str, str]:
        return self.bundle.dek.context

    @property
    def not_before(self) -> datetime:
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc

    @property
    def spki_sha384(self) -> bytes:
        return spki_sha384(self.spki_der)

    @property
    def key_type(self) -> str:
        return key_type_of(self.leaf)


def key_type_of(cert: x509.Certificate) -> str:
    """``p256``, ``p384``, ``rsa2048``… for a certificate's public key."""
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}.get(
            key.curve.name, key.curve.name
        )
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa{key.key_size}"
    return type(key).__name__


def verify(
    bundle_bytes: bytes,
    verifier: Verifier,
    generator_policy: Policy,
    *,
    at: datetime | None = None,
    min_seq: int = 0,
    names: Sequence[str] | None = None,
    ca_roots: Sequence[bytes] | None = None,
) -> VerifiedBundle:
    """Check everything about a stored bundle that can be checked without KMS."""
    now = at or datetime.now(UTC)
    bundle = decode(bundle_bytes)
    document = _verify_generator(bundle, verifier, generator_policy, now)
    if document.user_data != bundle.binding_user_data():
        raise BindingError(
            "the generator's document does not match this bundle's bytes: a field was changed, "
            "or the document belongs to another bundle"
        )
    if bundle.seq < min_seq:
        raise StaleBundleError(
            f"bundle {bundle.name!r} has seq {bundle.seq}, below the floor {min_seq} "
            "(an older bundle replayed?)"
        )
    info = check_chain(bundle.chain, at=now, names=names, ca_roots=ca_roots)
    expected = encryption_context(bundle.bundle_id, bundle.name, info.spki_der)
    if dict(bundle.dek.context) != expected:
        raise ContextMismatchError(
            f"dek.context is {dict(bundle.dek.context)}, but this bundle's id, name and leaf key "
            f"give {expected}"
        )
    return VerifiedBundle(
        bundle=bundle,
        raw=bytes(bundle_bytes),
        generator=document,
        leaf=info.leaf,
        spki_der=info.spki_der,
        domains=info.domains,
    )


def _verify_generator(
    bundle: Bundle, verifier: Verifier, policy: Policy, now: datetime
) -> AttestationDocument:
    gen = bundle.gen
    if gen is None:  # decode never returns an unbound bundle; fail closed all the same
        raise BindingError("the bundle carries no generator document")
    try:
        stamped = parse_document(gen).document.timestamp
        created = bundle.created
        if not created - BIND_WINDOW_BEFORE <= stamped <= created + BIND_WINDOW_AFTER:
            raise GeneratorDocumentError(
                f"the generator's document is dated {stamped:%Y-%m-%d %H:%M:%SZ}, too far from "
                f"the bundle's creation {created:%Y-%m-%d %H:%M:%SZ}"
            )
        if stamped > now + CLOCK_SKEW:
            raise GeneratorDocumentError(
                f"the generator's document is dated {stamped:%Y-%m-%d %H:%M:%SZ}, in the future"
            )
        # Nitro leaf certificates live about three hours: judge the chain as of signing time.
        document = verifier.verify(gen, replace(policy, user_data=None), at=stamped)
    except AttestationError as error:
        raise GeneratorDocumentError(
            f"the generator's attestation document is refused ({type(error).__name__}): {error}"
        ) from error
    if document.is_debug and not policy.allow_debug:
        raise GeneratorDocumentError("the generator ran in debug mode (PCR0-2 zero): refused")
    return document


def open_key(verified: VerifiedBundle, data_key: SecretBuffer) -> bytearray:
    """The PKCS#8 private key, as a bytearray the caller wipes; the data key stays the caller's."""
    bundle = verified.bundle
    return open_sealed(
        bundle.key,
        data_key,
        bundle_id=bundle.bundle_id,
        name=bundle.name,
        spki_der=verified.spki_der,
    )


class DataKeyDecrypter(Protocol):
    """The slice of ``nitrotls.kms.client.KMSClient`` that opening a bundle needs."""

    def decrypt(
        self,
        blob: bytes,
        context: Mapping[str, str],
        source: AttestationSource,
        key_id: str | None = None,
    ) -> SecretBuffer: ...


def unseal(verified: VerifiedBundle, kms: DataKeyDecrypter, source: AttestationSource) -> bytearray:
    """KMS Decrypt with this enclave's attestation, open the key, wipe the data key."""
    dek = verified.bundle.dek
    with kms.decrypt(dek.blob, dek.context, source, key_id=dek.kms_key_id) as data_key:
        return open_key(verified, data_key)
