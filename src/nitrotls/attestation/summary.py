"""A readable account of a document's contents, for people and for ``--json`` (no verification).

Fields an enclave fills freely (public_key, user_data, nonce) are described by what they look
like: a nitrotls binding (a CBOR map tagged ``nitrotls/...``), a DER public key, text, or bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nitrotls.attestation.document import AttestationDocument
from nitrotls.attestation.errors import hex_prefix


@dataclass(frozen=True)
class CertificateSummary:
    """One certificate of the chain as printed: where it sits, whom it names, when it is valid."""

    position: str
    subject: str
    not_before: datetime | None
    not_after: datetime | None


def certificate_summaries(document: AttestationDocument) -> list[CertificateSummary]:
    """Root first, leaf last, as the chain is built."""
    positions = [f"cabundle[{i}]" for i in range(len(document.cabundle))] + ["certificate"]
    return [
        _summarise(position, der)
        for position, der in zip(positions, (*document.cabundle, document.certificate), strict=True)
    ]


def describe_field(value: bytes | None) -> str:
    """What an enclave-chosen field appears to hold, in one line."""
    if value is None:
        return "null"
    for recognise in (_binding, _public_key, _text):
        found = recognise(value)
        if found:
            return found
    return hex_prefix(value, 24) if len(value) > 24 else f"{len(value)} bytes: {value.hex()}"


def summary(document: AttestationDocument) -> dict[str, Any]:
    """A JSON-ready dictionary of every field, with descriptions of the free-form ones."""
    return {
        "module_id": document.module_id,
        "timestamp_ms": document.timestamp_ms,
        "timestamp": document.timestamp.isoformat(),
        "digest": document.digest,
        "debug": document.is_debug,
        "pcrs": {str(index): value.hex() for index, value in sorted(document.pcrs.items())},
        "chain": [
            {
                "position": cert.position,
                "subject": cert.subject,
                "not_before": cert.not_before.isoformat() if cert.not_before else None,
                "not_after": cert.not_after.isoformat() if cert.not_after else None,
            }
            for cert in certificate_summaries(document)
        ],
        **{
            name: {
                "hex": value.hex() if value is not None else None,
                "description": describe_field(value),
            }
            for name, value in (
                ("public_key", document.public_key),
                ("user_data", document.user_data),
                ("nonce", document.nonce),
            )
        },
    }


def _field(value: bytes | None) -> dict[str, str | None]:
    return {"hex": value.hex() if value is not None else None, "description": describe_field(value)}


def _summarise(position: str, der: bytes) -> CertificateSummary:
    try:
        cert = x509.load_der_x509_certificate(der)
        return CertificateSummary(
            position,
            cert.subject.rfc4514_string(),
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
        )
    except Exception:  # inspection shows what it can; verification is where this fails
        return CertificateSummary(position, f"(unparseable DER, {len(der)} bytes)", None, None)


def _binding(value: bytes) -> str:
    try:
        decoded = cbor2.loads(value, max_depth=4)
    except Exception:  # not CBOR: try the next interpretation
        return ""
    if not isinstance(decoded, dict) or not str(decoded.get("t", "")).startswith("nitrotls/"):
        return ""
    fields = ", ".join(
        f"{key}={hex_prefix(item) if isinstance(item, bytes) else repr(item)[:40]}"
        for key, item in decoded.items()
        if key != "t"
    )
    return f"nitrotls binding {decoded['t']}: {fields}"


def _public_key(value: bytes) -> str:
    try:
        key = serialization.load_der_public_key(value)
    except Exception:  # not a DER SubjectPublicKeyInfo
        return ""
    if isinstance(key, ec.EllipticCurvePublicKey):
        kind = f"EC {key.curve.name}"
    elif isinstance(key, rsa.RSAPublicKey):
        kind = f"RSA {key.key_size}"
    else:
        kind = type(key).__name__
    return f"DER public key ({kind}), SHA-256 {hashlib.sha256(value).hexdigest()[:16]}…"


def _text(value: bytes) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if not text or not text.isprintable():
        return ""
    return f"text {text[:80]!r}" + ("…" if len(text) > 80 else "")
