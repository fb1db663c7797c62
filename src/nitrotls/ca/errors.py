"""Typed errors of the CA layer: bad CSRs, the local dev CA, and every ACME problem type.

An ACME server reports failures as RFC 7807 problem documents whose ``type`` is
``urn:ietf:params:acme:error:<code>`` (RFC 8555 §6.7). Each code has its own class so callers can
decide what to retry (``rateLimited``: later; ``serverInternal``: soon; ``rejectedIdentifier``:
never) and the message carries the server's own ``detail``.
"""

from __future__ import annotations

from nitrotls.errors import NitroTLSError

ACME_ERROR_PREFIX = "urn:ietf:params:acme:error:"


class CAError(NitroTLSError):
    """Base of every CA error."""


class CSRError(CAError):
    """A CSR that cannot be certified: unparseable, badly signed, no usable names, weak key."""


class LocalCAError(CAError):
    """The local dev CA's files are missing, unsafe or inconsistent."""


class AcmeError(CAError):
    """Base of every ACME failure."""


class AcmeTransportError(AcmeError):
    """The ACME server could not be reached, or its TLS certificate did not verify."""


class AcmeTimeoutError(AcmeError):
    """The server did not finish (validation, issuance) before the deadline."""


class AcmeProtocolError(AcmeError):
    """The server answered something RFC 8555 does not allow here."""


class AcmeChallengeError(AcmeError):
    """A challenge could not be set up on our side (no publisher, the DNS hook failed, …)."""


class AcmeProblemError(AcmeError):
    """An RFC 8555 problem document from the server; subclasses name the problem type."""

    code: str = ""

    def __init__(
        self, message: str, *, problem_type: str, detail: str, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.problem_type = problem_type
        self.detail = detail
        self.status = status


class AcmeAccountDoesNotExistError(AcmeProblemError):
    code = "accountDoesNotExist"


class AcmeAlreadyRevokedError(AcmeProblemError):
    code = "alreadyRevoked"


class AcmeBadCSRError(AcmeProblemError):
    code = "badCSR"


class AcmeBadNonceError(AcmeProblemError):
    code = "badNonce"


class AcmeBadPublicKeyError(AcmeProblemError):
    code = "badPublicKey"


class AcmeBadRevocationReasonError(AcmeProblemError):
    code = "badRevocationReason"


class AcmeBadSignatureAlgorithmError(AcmeProblemError):
    code = "badSignatureAlgorithm"


class AcmeCAAError(AcmeProblemError):
    code = "caa"


class AcmeCompoundError(AcmeProblemError):
    code = "compound"


class AcmeConnectionError(AcmeProblemError):
    code = "connection"


class AcmeDNSError(AcmeProblemError):
    code = "dns"


class AcmeExternalAccountRequiredError(AcmeProblemError):
    code = "externalAccountRequired"


class AcmeIncorrectResponseError(AcmeProblemError):
    code = "incorrectResponse"


class AcmeInvalidContactError(AcmeProblemError):
    code = "invalidContact"


class AcmeMalformedError(AcmeProblemError):
    code = "malformed"


class AcmeOrderNotReadyError(AcmeProblemError):
    code = "orderNotReady"


class AcmeRateLimitedError(AcmeProblemError):
    code = "rateLimited"


class AcmeRejectedIdentifierError(AcmeProblemError):
    code = "rejectedIdentifier"


class AcmeServerInternalError(AcmeProblemError):
    code = "serverInternal"


class AcmeTLSError(AcmeProblemError):
    code = "tls"


class AcmeUnauthorizedError(AcmeProblemError):
    code = "unauthorized"


class AcmeUnsupportedContactError(AcmeProblemError):
    code = "unsupportedContact"


class AcmeUnsupportedIdentifierError(AcmeProblemError):
    code = "unsupportedIdentifier"


class AcmeUserActionRequiredError(AcmeProblemError):
    code = "userActionRequired"


PROBLEM_CLASSES: dict[str, type[AcmeProblemError]] = {
    cls.code: cls
    for cls in (
        AcmeAccountDoesNotExistError,
        AcmeAlreadyRevokedError,
        AcmeBadCSRError,
        AcmeBadNonceError,
        AcmeBadPublicKeyError,
        AcmeBadRevocationReasonError,
        AcmeBadSignatureAlgorithmError,
        AcmeCAAError,
        AcmeCompoundError,
        AcmeConnectionError,
        AcmeDNSError,
        AcmeExternalAccountRequiredError,
        AcmeIncorrectResponseError,
        AcmeInvalidContactError,
        AcmeMalformedError,
        AcmeOrderNotReadyError,
        AcmeRateLimitedError,
        AcmeRejectedIdentifierError,
        AcmeServerInternalError,
        AcmeTLSError,
        AcmeUnauthorizedError,
        AcmeUnsupportedContactError,
        AcmeUnsupportedIdentifierError,
        AcmeUserActionRequiredError,
    )
}


def problem_error(
    problem_type: str | None,
    detail: str | None,
    *,
    status: int | None = None,
    context: str = "",
) -> AcmeProblemError:
    """The typed error for a problem document (unknown types get the base class)."""
    typ = problem_type or "about:blank"
    code = typ[len(ACME_ERROR_PREFIX) :] if typ.startswith(ACME_ERROR_PREFIX) else ""
    cls = PROBLEM_CLASSES.get(code, AcmeProblemError)
    text = (detail or "").strip() or "no detail given"
    where = f" {context}" if context else ""
    label = code or typ
    message = f"ACME server refused{where}: {label}: {text}"
    return cls(message, problem_type=typ, detail=text, status=status)
