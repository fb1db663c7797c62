"""Nitro attestation documents: parse (strict), authenticate (pinned root, chain, ES384), accept.

Public API (see docs/interfaces.md §attestation)::

    verifier = Verifier()                      # AWS Nitro root G1 pinned by fingerprint
    policy = Policy(accepted_pcrs=(load_pcrs_file("measurements.json"),), nonce=my_nonce)
    document = verifier.verify(data, policy)   # raises an AttestationError subclass, or accepts

Every refusal is a subclass of :class:`AttestationError` naming what was expected and found.
"""

from __future__ import annotations

from nitrotls.attestation.document import (
    AttestationDocument,
    ParsedDocument,
    parse_document,
    unwrap_document,
)
from nitrotls.attestation.errors import (
    AttestationError,
    BrokenChainError,
    CertificateExpiredError,
    DebugEnclaveError,
    DocumentEncodingError,
    DocumentTooOldError,
    ModuleMismatchError,
    NonceMismatchError,
    NotAnEnclaveDocumentError,
    PCRFileError,
    PCRMismatchError,
    PolicyError,
    SignatureError,
    UnsupportedAlgorithmError,
    UntrustedRootError,
    UserDataMismatchError,
)
from nitrotls.attestation.pcrs import load_pcrs_file, parse_pcrs_json
from nitrotls.attestation.policy import Policy
from nitrotls.attestation.verifier import AWS_NITRO_ROOT_G1_SHA256, Verifier

__all__ = [
    "AWS_NITRO_ROOT_G1_SHA256",
    "AttestationDocument",
    "AttestationError",
    "BrokenChainError",
    "CertificateExpiredError",
    "DebugEnclaveError",
    "DocumentEncodingError",
    "DocumentTooOldError",
    "ModuleMismatchError",
    "NonceMismatchError",
    "NotAnEnclaveDocumentError",
    "PCRFileError",
    "PCRMismatchError",
    "ParsedDocument",
    "Policy",
    "PolicyError",
    "SignatureError",
    "UnsupportedAlgorithmError",
    "UntrustedRootError",
    "UserDataMismatchError",
    "Verifier",
    "load_pcrs_file",
    "parse_document",
    "parse_pcrs_json",
    "unwrap_document",
]
