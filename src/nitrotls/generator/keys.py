"""The TLS key's birth: a PKCS#8 bytearray to seal, the public key, and a CSR.

The ``cryptography`` key object exists only while this module needs it (to serialise the key and
sign the CSR); the PKCS#8 copy is a bytearray the caller seals and then wipes. ``cryptography``
hands back an immutable ``bytes`` when serialising: it is copied into the bytearray and the
reference dropped at once (CPython frees it immediately, though it cannot zero it).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from nitrotls.config import KEY_TYPES
from nitrotls.generator.errors import GeneratorConfigError
from nitrotls.secrets import wipe

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
MAX_CN = 64


def generate(key_type: str) -> PrivateKey:
    """A new private key of one of :data:`nitrotls.config.KEY_TYPES`."""
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa2048", "rsa3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    raise GeneratorConfigError(f"key type must be one of {', '.join(KEY_TYPES)}, got {key_type!r}")


class BornKey:
    """A fresh key: ``pkcs8`` (wipe via :meth:`wipe_private`), ``spki``, and :meth:`csr`."""

    def __init__(self, key_type: str) -> None:
        self.key_type = key_type
        self._key: PrivateKey | None = generate(key_type)
        serialized = self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.pkcs8 = bytearray(serialized)
        del serialized
        self.spki = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def csr(self, domains: Sequence[str]) -> bytes:
        """A DER CSR for ``domains`` (SANs; CN = the first when it fits), signed by the key."""
        if self._key is None:
            raise GeneratorConfigError("the key was already dropped; make the CSR before that")
        if not domains:
            raise GeneratorConfigError("a certificate needs at least one domain (--domain)")
        subject = []
        if len(domains[0]) <= MAX_CN:
            subject.append(x509.NameAttribute(NameOID.COMMON_NAME, domains[0]))
        digest = hashes.SHA384() if self.key_type == "p384" else hashes.SHA256()
        request = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name(subject))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
            )
            .sign(self._key, digest)
        )
        return request.public_bytes(serialization.Encoding.DER)

    def wipe_private(self) -> None:
        """Zero the PKCS#8 copy (the key object may still sign the CSR)."""
        wipe(self.pkcs8)

    def drop(self) -> None:
        """Zero the PKCS#8 copy and release the key object."""
        self.wipe_private()
        self._key = None

    def __enter__(self) -> BornKey:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.drop()
