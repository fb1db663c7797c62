"""CMS EnvelopedData as KMS sends it in ``CiphertextForRecipient``: strict parse, open, build.

See docs/kms.md for exactly what is accepted and what is refused.
"""

from __future__ import annotations

from nitrotls.kms.cms.envelope import build_enveloped, open_enveloped, subject_key_identifier
from nitrotls.kms.cms.parse import EnvelopedParts, parse_enveloped

__all__ = [
    "EnvelopedParts",
    "build_enveloped",
    "open_enveloped",
    "parse_enveloped",
    "subject_key_identifier",
]
