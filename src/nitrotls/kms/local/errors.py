"""Errors of the local KMS server.

Two kinds. :class:`ServiceError` is an answer on the wire: it carries the AWS error code and
HTTP status that boto3 turns into the same ``ClientError`` it raises against AWS. It never leaves
the server as a Python exception. The others (:class:`LocalKMSError` and its children) are
operator-facing problems (bad configuration, a broken master key, a broken audit chain) that the
CLI prints as one line.
"""

from __future__ import annotations

from nitrotls.kms.errors import KMSError


class LocalKMSError(KMSError):
    """Base of every error the local KMS raises to its operator."""


class ConfigError(LocalKMSError):
    """The server configuration is unusable (file, credentials, listen address)."""

    exit_code = 2


class StorageError(LocalKMSError):
    """The key store or its master key cannot be opened or does not match."""


class AuditError(LocalKMSError):
    """The audit log cannot be read, written or verified."""


class ServiceError(LocalKMSError):
    """An AWS KMS error answer: ``code`` becomes ``__type``, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def access_denied(message: str) -> ServiceError:
    return ServiceError("AccessDeniedException", message)


def validation(message: str) -> ServiceError:
    return ServiceError("ValidationException", message)


def not_found(message: str) -> ServiceError:
    return ServiceError("NotFoundException", message)


def invalid_state(message: str) -> ServiceError:
    return ServiceError("KMSInvalidStateException", message)


def invalid_ciphertext(
    message: str = "The ciphertext is invalid or was not made for this context.",
) -> ServiceError:
    return ServiceError("InvalidCiphertextException", message)


def internal(message: str = "The local KMS hit an internal error; see its log.") -> ServiceError:
    return ServiceError("KMSInternalException", message, status=500)
