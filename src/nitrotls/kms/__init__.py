"""Key release through KMS with attestation.

- ``nitrotls.kms.cms``: open (and build) the CMS envelope KMS returns in
  ``CiphertextForRecipient``.
- ``nitrotls.kms.client``: :class:`~nitrotls.kms.client.KMSClient`, GenerateDataKey and Decrypt
  with a ``Recipient`` attestation document, over boto3.
- ``nitrotls.kms.policy``: the key-policy document for a deployment.
- ``nitrotls.kms.local``: a local KMS server speaking AWS's protocol.
- ``nitrotls.kms.errors``: the :class:`KMSError` family.

Submodules are imported on demand so the CMS code does not pull in boto3.
"""

from __future__ import annotations

from nitrotls.kms.errors import (
    CMSFormatError,
    KMSAccessDeniedError,
    KMSError,
    KMSRequestError,
    KMSUnavailableError,
)

__all__ = [
    "CMSFormatError",
    "KMSAccessDeniedError",
    "KMSError",
    "KMSRequestError",
    "KMSUnavailableError",
]
