"""nitrotls.bundle: the v1 bundle format (build, seal, bind, verify, open).

A bundle carries a CA chain, the PKCS#8 key sealed under a KMS data key, the wrapped data key and
its context, and the generator's attestation over all of it. Generator side::

    context = encryption_context(bundle_id, name, spki)          # before asking KMS
    sealed = seal_key(pkcs8, data_key, bundle_id=..., name=..., spki_der=spki)
    unbound = build(bundle_id=..., seq=..., name=..., chain=..., key=sealed, dek=...)
    stored = bind(unbound, source).encode()

Main enclave side::

    verified = verify(stored, verifier, generator_policy, min_seq=floor)   # no KMS yet
    pkcs8 = unseal(verified, kms_client, source)                           # or open_key(...)
"""

from nitrotls.bundle.build import bind, build, new_bundle_id
from nitrotls.bundle.chain import ChainInfo, check_chain, leaf_spki
from nitrotls.bundle.errors import (
    BindingError,
    BundleError,
    BundleFormatError,
    CertificateChainError,
    ContextMismatchError,
    GeneratorDocumentError,
    KeyMismatchError,
    NameMismatchError,
    SealError,
    StaleBundleError,
    UnsupportedVersionError,
)
from nitrotls.bundle.format import (
    BINDING_TYPE,
    VERSION,
    Bundle,
    SealedKey,
    WrappedDataKey,
    check_name,
    decode,
)
from nitrotls.bundle.seal import (
    aead_open,
    aead_seal,
    check_key_matches,
    encryption_context,
    open_sealed,
    public_spki,
    seal_aad,
    seal_key,
    spki_sha384,
)
from nitrotls.bundle.summary import BundleSummary, summarize
from nitrotls.bundle.verify import (
    DataKeyDecrypter,
    VerifiedBundle,
    key_type_of,
    open_key,
    unseal,
    verify,
)

__all__ = [
    "BINDING_TYPE",
    "VERSION",
    "BindingError",
    "Bundle",
    "BundleError",
    "BundleFormatError",
    "BundleSummary",
    "CertificateChainError",
    "ChainInfo",
    "ContextMismatchError",
    "DataKeyDecrypter",
    "GeneratorDocumentError",
    "KeyMismatchError",
    "NameMismatchError",
    "SealError",
    "SealedKey",
    "StaleBundleError",
    "UnsupportedVersionError",
    "VerifiedBundle",
    "WrappedDataKey",
    "aead_open",
    "aead_seal",
    "bind",
    "build",
    "check_chain",
    "check_key_matches",
    "check_name",
    "decode",
    "encryption_context",
    "key_type_of",
    "leaf_spki",
    "new_bundle_id",
    "open_key",
    "open_sealed",
    "public_spki",
    "seal_aad",
    "seal_key",
    "spki_sha384",
    "summarize",
    "unseal",
    "verify",
]
