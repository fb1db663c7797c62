"""Why an attestation document was refused: one class per reason, all under one base.

Callers catch :class:`AttestationError` to refuse a peer, or a subclass to say why. Messages name
what was expected and what was found, with long values cut to a short hex prefix.
"""

from __future__ import annotations

from nitrotls.errors import NitroTLSError


class AttestationError(NitroTLSError):
    """The document is not genuine, not well formed, or not acceptable under the policy."""


class DocumentEncodingError(AttestationError):
    """The bytes are not a well-formed COSE_Sign1 attestation document."""


class UnsupportedAlgorithmError(AttestationError):
    """The document uses an algorithm other than ES384 / SHA384 on P-384."""


class NotAnEnclaveDocumentError(AttestationError):
    """A well-formed document of another kind (e.g. NitroTPM), not from a Nitro enclave."""


class UntrustedRootError(AttestationError):
    """The chain's root is not one of the pinned root fingerprints."""


class BrokenChainError(AttestationError):
    """A certificate is not properly issued by the one above it, or lacks CA rights."""


class CertificateExpiredError(AttestationError):
    """A certificate in the chain is not valid at the instant of verification."""


class SignatureError(AttestationError):
    """The COSE signature does not verify under the leaf certificate's key."""


class PolicyError(AttestationError):
    """The policy itself is unusable (for instance, it checks no measurement)."""


class PCRFileError(PolicyError):
    """A measurements file (``--pcrs-file``) cannot be read or is not in a known format."""

    exit_code = 2  # a file named in the configuration


class DebugEnclaveError(AttestationError):
    """A debug-mode enclave (PCR0, PCR1, PCR2 all zero) and the policy does not allow debug."""


class PCRMismatchError(AttestationError):
    """The measurements match none of the accepted PCR sets (or a pinned PCR4)."""


class ModuleMismatchError(PCRMismatchError):
    """The module_id is not the pinned one (a measurement of identity, hence a PCR mismatch)."""


class NonceMismatchError(AttestationError):
    """The document's nonce is not the one the verifier asked for."""


class DocumentTooOldError(AttestationError):
    """The document's timestamp is older than the policy's maximum age (or in the future)."""


class UserDataMismatchError(AttestationError):
    """The document's user_data is not what the policy expects."""


def hex_prefix(value: bytes | None, length: int = 16) -> str:
    """Short, log-safe rendering of a value for error messages."""
    if value is None:
        return "none"
    text = value[:length].hex()
    return f"{text}… ({len(value)} bytes)" if len(value) > length else text or "empty"
