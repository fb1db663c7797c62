"""nitrotls.ca: turn a CSR into a certificate chain — ACME (RFC 8555) or a local dev CA.

Every CA verifies the CSR's signature first and certifies exactly its subjectAltName names;
every CA returns the DER chain, leaf first. ACME issuance polls tightly (50 ms backoff) instead
of the ``acme`` library's fixed one-second sleeps, and each ACME problem type has its own error.

Public API: :class:`CertificateAuthority`, :class:`LocalCA`, :class:`AcmeCA`,
:class:`AcmeAccount`, :class:`PendingOrder` (``AcmeCA.begin``: order before the key exists),
:class:`ExternalAccountBinding`, :class:`Backoff`,
:class:`Http01Publisher`, :data:`DnsHook`, :func:`command_dns_hook`, :func:`load_csr`,
:func:`csr_names`, the HTTP-01 responder (:func:`start_responder`, :class:`ChallengeServer`) and
the errors of :mod:`.errors`. See docs/ca.md.

The ACME client (``requests``, ``acme``, ``josepy``) and the responder (``http.server``) are
imported on first use of their names, so a process using only the local CA does not load them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

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

if TYPE_CHECKING:
    from nitrotls.ca.acme_ca import (
        AcmeAccount,
        AcmeCA,
        Backoff,
        ExternalAccountBinding,
        PendingOrder,
    )
    from nitrotls.ca.responder import ChallengeServer, start_responder

_LAZY = {
    "AcmeAccount": "acme_ca",
    "AcmeCA": "acme_ca",
    "Backoff": "acme_ca",
    "ExternalAccountBinding": "acme_ca",
    "PendingOrder": "acme_ca",
    "ChallengeServer": "responder",
    "start_responder": "responder",
}


def __getattr__(name: str) -> object:
    """Import the ACME client or the responder when one of their names is first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


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
    "PendingOrder",
    "command_dns_hook",
    "csr_names",
    "load_csr",
    "problem_error",
    "start_responder",
]
