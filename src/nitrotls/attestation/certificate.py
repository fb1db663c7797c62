"""One certificate, parsed once: the facts chain checks need, and the proof of one link.

Everything a later check reads is extracted here, inside one ``try``, so malformed DER fails as a
typed error at load time and never half-way through a check. The result is immutable and may be
cached: per-call checks (validity, CA rights in a given chain) only read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from nitrotls.attestation.der import certificate_parts
from nitrotls.attestation.errors import BrokenChainError, DocumentEncodingError

_EC_TYPES: dict[type, bool] = {}
_ECDSA = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}


@dataclass(frozen=True, slots=True)
class Certified:
    """A parsed certificate and the profile facts the per-call checks need."""

    der: bytes
    cert: x509.Certificate
    tbs: bytes  # exactly as signed
    signature: bytes
    signature_algorithm: x509.ObjectIdentifier
    issuer_der: bytes
    subject_der: bytes
    public_key: object
    ec_key: ec.EllipticCurvePublicKey | None  # set for EC keys (issuers must have one)
    not_before: datetime
    not_after: datetime
    is_ca: bool
    path_length: int | None
    key_cert_sign: bool
    digital_signature: bool
    es384_key: ec.EllipticCurvePublicKey | None  # set when the key is P-384 (leaf use)

    @property
    def subject(self) -> str:
        return _name_text(self.cert, "subject")

    @property
    def issuer(self) -> str:
        return _name_text(self.cert, "issuer")


def load_certificate(der: bytes, where: str) -> Certified:
    """Parse ``der`` (the certificate at ``where``) or raise :class:`DocumentEncodingError`."""
    try:
        cert = x509.load_der_x509_certificate(der)
        parts = certificate_parts(der)
        constraints, usage, critical = _extensions(cert)
        public_key: object = cert.public_key()
        ec_key = _ec_key(public_key)
        certified = Certified(
            der=der,
            cert=cert,
            tbs=parts.tbs,
            signature=cert.signature,
            signature_algorithm=cert.signature_algorithm_oid,
            issuer_der=parts.issuer,
            subject_der=parts.subject,
            public_key=public_key,
            ec_key=ec_key,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            is_ca=constraints is not None and constraints.ca,
            path_length=constraints.path_length if constraints is not None else None,
            key_cert_sign=usage is not None and usage.key_cert_sign,
            digital_signature=usage is not None and usage.digital_signature,
            es384_key=ec_key if ec_key is not None and ec_key.curve.name == "secp384r1" else None,
        )
    except Exception as error:  # malformed DER surfaces as ValueError, KeyError and friends
        raise DocumentEncodingError(
            f"{where}: certificate DER does not parse ({str(error)[:120]})"
        ) from error
    if parts.signature_algorithm != parts.tbs_signature_algorithm:
        raise BrokenChainError(f"{where}: inner and outer signature algorithms differ")
    if critical is not None:
        raise BrokenChainError(f"{where}: unknown critical extension {critical.dotted_string}")
    return certified


def check_issued(child: Certified, issuer: Certified, where: str) -> None:
    """Raise :class:`BrokenChainError` unless ``issuer`` named and signed ``child``."""
    if child.issuer_der != issuer.subject_der:
        raise BrokenChainError(
            f"{where}: expected issuer {issuer.subject!r} (the certificate above it),"
            f" found issuer {child.issuer!r}"
        )
    algorithm = _ECDSA.get(child.signature_algorithm)
    if algorithm is None:
        raise BrokenChainError(
            f"{where}: expected an ECDSA signature, found {child.signature_algorithm.dotted_string}"
        )
    if issuer.ec_key is None:
        raise BrokenChainError(f"{where}: expected an EC issuer key, found another kind")
    try:
        issuer.ec_key.verify(child.signature, child.tbs, algorithm)
    except InvalidSignature:
        raise BrokenChainError(
            f"{where}: expected a signature by {issuer.subject!r}, found one that does not verify"
        ) from None


def _ec_key(key: object) -> ec.EllipticCurvePublicKey | None:
    """``key`` if it is an EC public key. ABC checks are slow, so verdicts are kept per type."""
    kind = type(key)
    verdict = _EC_TYPES.get(kind)
    if verdict is None:
        verdict = _EC_TYPES[kind] = isinstance(key, ec.EllipticCurvePublicKey)
    return key if verdict else None  # type: ignore[return-value]


def _extensions(
    cert: x509.Certificate,
) -> tuple[x509.BasicConstraints | None, x509.KeyUsage | None, x509.ObjectIdentifier | None]:
    """basicConstraints, keyUsage, and the first critical extension not understood (one pass)."""
    constraints: x509.BasicConstraints | None = None
    usage: x509.KeyUsage | None = None
    critical: x509.ObjectIdentifier | None = None
    for extension in cert.extensions:
        oid = extension.oid
        if oid == ExtensionOID.BASIC_CONSTRAINTS:
            constraints = extension.value
        elif oid == ExtensionOID.KEY_USAGE:
            usage = extension.value
        elif extension.critical and critical is None:
            critical = oid
    return constraints, usage, critical


def _name_text(cert: x509.Certificate, field: str) -> str:
    """A name for messages; rendered only when a message needs it."""
    try:
        name: x509.Name = getattr(cert, field)
        return name.rfc4514_string()[:160]
    except Exception:  # a name that does not decode still deserves a message
        return "(undecodable name)"
