"""nitrotls.ca: turn a CSR into a certificate chain — ACME (RFC 8555) or a local dev CA.

Every CA verifies the CSR's signature first and certifies exactly its subjectAltName names;
every CA returns the DER chain, leaf first. ACME issuance polls tightly (50 ms backoff) instead
of the ``acme`` library's fixed one-second sleeps, and each ACME problem type has its own error.

Public API: :class:`CertificateAuthority`, :class:`LocalCA`, :class:`AcmeCA`,
:class:`AcmeAccount`, :class:`ExternalAccountBinding`, :class:`Backoff`,
:class:`Http01Publisher`, :data:`DnsHook`, :func:`command_dns_hook`, :func:`load_csr`,
:func:`csr_names`, the HTTP-01 responder (:func:`start_responder`, :class:`ChallengeServer`) and
the errors of :mod:`.errors`. See docs/ca.md.
"""

from __future__ import annotations

from typing import Protocol

from nitrotls.ca.acme_ca import AcmeAccount, AcmeCA, Backoff, ExternalAccountBinding
from nitrotls.ca.csr import CSRNames, csr_names, load_csr
from nitrotls.ca.errors import (
    PROBLEM_CLASSES,
    AcmeAccountDoesNotExistError,
    AcmeAlreadyRevokedError,
    AcmeBadCSRError,
    AcmeBadNonceError,
    AcmeBadPublicKeyError,
    AcmeBadRevocationReasonError,
    AcmeBadSignatureAlgorithmError,
    AcmeCAAError,
    AcmeChallengeError,
    AcmeCompoundError,
    AcmeConnectionError,
    AcmeDNSError,
    AcmeError,
    AcmeExternalAccountRequiredError,
    AcmeIncorrectResponseError,
    AcmeInvalidContactError,
    AcmeMalformedError,
    AcmeOrderNotReadyError,
    AcmeProblemError,
    AcmeProtocolError,
    AcmeRateLimitedError,
    AcmeRejectedIdentifierError,
    AcmeServerInternalError,
    AcmeTimeoutError,
    AcmeTLSError,
    AcmeTransportError,
    AcmeUnauthorizedError,
    AcmeUnsupportedContactError,
    AcmeUnsupportedIdentifierError,
    AcmeUserActionRequiredError,
    CAError,
    CSRError,
    LocalCAError,
    problem_error,
)
from nitrotls.ca.hooks import DnsHook, Http01Publisher, command_dns_hook
from nitrotls.ca.local import LocalCA
from nitrotls.ca.responder import ChallengeServer, start_responder


class CertificateAuthority(Protocol):
    """Anything that certifies a CSR: PEM or DER in, DER chain (leaf first) out."""

    def issue(self, csr: bytes) -> tuple[bytes, ...]: ...


__all__ = [
    "PROBLEM_CLASSES",
    "AcmeAccount",
    "AcmeAccountDoesNotExistError",
    "AcmeAlreadyRevokedError",
    "AcmeBadCSRError",
    "AcmeBadNonceError",
    "AcmeBadPublicKeyError",
    "AcmeBadRevocationReasonError",
    "AcmeBadSignatureAlgorithmError",
    "AcmeCA",
    "AcmeCAAError",
    "AcmeChallengeError",
    "AcmeCompoundError",
    "AcmeConnectionError",
    "AcmeDNSError",
    "AcmeError",
    "AcmeExternalAccountRequiredError",
    "AcmeIncorrectResponseError",
    "AcmeInvalidContactError",
    "AcmeMalformedError",
    "AcmeOrderNotReadyError",
    "AcmeProblemError",
    "AcmeProtocolError",
    "AcmeRateLimitedError",
    "AcmeRejectedIdentifierError",
    "AcmeServerInternalError",
    "AcmeTLSError",
    "AcmeTimeoutError",
    "AcmeTransportError",
    "AcmeUnauthorizedError",
    "AcmeUnsupportedContactError",
    "AcmeUnsupportedIdentifierError",
    "AcmeUserActionRequiredError",
    "Backoff",
    "CAError",
    "CSRError",
    "CSRNames",
    "CertificateAuthority",
    "ChallengeServer",
    "DnsHook",
    "ExternalAccountBinding",
    "Http01Publisher",
    "LocalCA",
    "LocalCAError",
    "command_dns_hook",
    "csr_names",
    "load_csr",
    "problem_error",
    "start_responder",
]
