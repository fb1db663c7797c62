"""The KMS error family: every failure of key release is one of these.

Shared by the client, the CMS parser and the local server (``nitrotls.kms.local`` may append
classes here), so callers can catch :class:`KMSError` and know nothing leaked.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from nitrotls.errors import NitroTLSError


class KMSError(NitroTLSError):
    """Base class of every KMS-related failure."""


class CMSFormatError(KMSError):
    """A CiphertextForRecipient is not the one CMS shape KMS sends (or does not decrypt)."""


class KMSRequestError(KMSError):
    """KMS answered with an error other than access denied; ``code`` is AWS's error code."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class KMSAccessDeniedError(KMSRequestError):
    """KMS refused the request; ``pcrs`` (and the message) hold the measurements presented."""

    def __init__(
        self,
        message: str,
        code: str = "AccessDeniedException",
        pcrs: Mapping[int, bytes] | None = None,
    ) -> None:
        super().__init__(message, code)
        self.pcrs: Mapping[int, bytes] = MappingProxyType(dict(pcrs or {}))


class KMSUnavailableError(KMSError):
    """KMS could not be reached, timed out, or kept failing after every retry."""


class KMSResponseError(KMSError):
    """KMS's answer is not one a real KMS gives (e.g. plaintext beside CiphertextForRecipient)."""


class KMSPolicyDocumentError(KMSError):
    """The inputs cannot make a safe key policy (missing measurements, bad ARNs, debug PCRs)."""
