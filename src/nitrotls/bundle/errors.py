"""Typed errors of the bundle format: each says which promise of the bundle was broken."""

from __future__ import annotations

from nitrotls.errors import NitroTLSError


class BundleError(NitroTLSError):
    """Base of every bundle error."""


class BundleFormatError(BundleError):
    """The bytes are not a well-formed, deterministically encoded v1 bundle."""


class UnsupportedVersionError(BundleFormatError):
    """The bundle declares a format version this nitrotls does not know."""


class GeneratorDocumentError(BundleError):
    """The generator's attestation document was refused (chain, signature, PCRs, debug, time)."""


class BindingError(BundleError):
    """The generator's document does not bind these bundle bytes: a field changed after binding."""


class CertificateChainError(BundleError):
    """The certificate chain is malformed, out of date, broken or untrusted."""


class NameMismatchError(CertificateChainError):
    """The leaf certificate does not cover a name the caller requires."""


class StaleBundleError(BundleError):
    """The bundle's sequence number is below the caller's floor (a rollback)."""


class ContextMismatchError(BundleError):
    """The KMS encryption context is not the one derived from the bundle's id, name and leaf key."""


class SealError(BundleError):
    """The sealed key could not be sealed or opened (wrong data key, IV, AAD or ciphertext)."""


class KeyMismatchError(BundleError):
    """The opened private key is not the key of the leaf certificate."""
