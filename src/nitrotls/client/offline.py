"""Check stored evidence: a document and the certificate it should bind, without connecting."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nitrotls.attestation import Policy, Verifier, parse_document
from nitrotls.client.errors import ClientError
from nitrotls.client.verdict import Verdict, judge


def load_certificate_der(data: bytes) -> bytes:
    """A certificate given as PEM or DER, returned as DER (the first one of a PEM chain)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise ClientError(f"not a certificate (PEM or DER): {error}") from None
    return cert.public_bytes(serialization.Encoding.DER)


def verify_offline(
    document: bytes,
    certificate: bytes,
    policy: Policy,
    *,
    verifier: Verifier,
    at_document_time: bool = False,
    allow_insecure_dev: bool = False,
) -> Verdict:
    """Judge stored evidence; the nonce is whatever the document carries (freshness unknown)."""
    parsed = parse_document(document).document
    at = parsed.timestamp if at_document_time else datetime.now(UTC)
    return judge(
        host="",
        port=0,
        document=document,
        leaf_der=load_certificate_der(certificate),
        nonce=None,
        verifier=verifier,
        policy=policy,
        allow_insecure_dev=allow_insecure_dev,
        at=at,
    )
