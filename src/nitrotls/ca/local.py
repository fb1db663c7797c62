"""A local development CA: one persistent root under the data directory, leaves on demand.

For one machine without ACME (tests, demos, private networks that pin this root). The root key
is a dev CA key and is allowed on disk (0600, written atomically); a TLS key never is. Leaves
follow the CA/Browser Forum shape a TLS client expects: serverAuth EKU, SANs only, AKI/SKI,
basicConstraints CA=false, and a short life (90 days by default).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nitrotls import home
from nitrotls.ca.csr import CSRNames, csr_names, load_csr
from nitrotls.ca.errors import LocalCAError
from nitrotls.store import files

KEY_FILE = "root-key.pem"
CERT_FILE = "root.pem"
ROOT_LIFETIME = timedelta(days=3650)
BACKDATE = timedelta(minutes=5)
_CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}


def _now() -> datetime:
    return datetime.now(UTC)


class LocalCA:
    """A dev CA whose root lives in ``directory`` (default ``<data dir>/ca``)."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        key_type: str = "P-384",
        validity: timedelta = timedelta(days=90),
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if key_type not in _CURVES:
            raise LocalCAError(f"unsupported root key type {key_type!r}; use P-256 or P-384")
        if not timedelta(hours=1) <= validity <= timedelta(days=398):
            raise LocalCAError(f"leaf validity {validity} outside 1 hour .. 398 days")
        self.directory = Path(directory) if directory is not None else home.sub_dir("ca")
        self.validity = validity
        self._key_type = key_type
        self._clock = clock
        self._key, self._root = self._load_or_create()

    @property
    def root_der(self) -> bytes:
        return self._root.public_bytes(serialization.Encoding.DER)

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._root

    @property
    def root_fingerprint(self) -> bytes:
        """SHA-256 of the root's DER, the value a verifier pins."""
        return hashlib.sha256(self.root_der).digest()

    # -- root --------------------------------------------------------------------------------

    def _load_or_create(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            with files.locked(self.directory / ".lock"):
                key = self._load_key() or self._create_key()
                root = self._load_root(key) or self._create_root(key)
        except OSError as error:
            raise LocalCAError(f"cannot use the dev CA in {self.directory}: {error}") from error
        return key, root

    def _load_key(self) -> ec.EllipticCurvePrivateKey | None:
        path = self.directory / KEY_FILE
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_uid != os.getuid():
            raise LocalCAError(
                f"dev CA key {path} must be a regular file owned by you with mode 0600 "
                f"(found mode {stat.S_IMODE(info.st_mode):04o}); fix it or delete the CA directory"
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as error:
            raise LocalCAError(f"dev CA key {path} does not parse: {error}") from error
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise LocalCAError(f"dev CA key {path} is not an EC key")
        return key

    def _create_key(self) -> ec.EllipticCurvePrivateKey:
        key = ec.generate_private_key(_CURVES[self._key_type])
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        files.atomic_write(self.directory / KEY_FILE, pem, mode=0o600, exclusive=True)
        return key

    def _load_root(self, key: ec.EllipticCurvePrivateKey) -> x509.Certificate | None:
        path = self.directory / CERT_FILE
        try:
            root = x509.load_pem_x509_certificate(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise LocalCAError(f"dev CA root {path} does not parse: {error}") from error
        if root.public_key() != key.public_key():
            raise LocalCAError(f"dev CA root {path} does not match the key in {KEY_FILE}")
        return root

    def _create_root(self, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        now = self._clock()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nitrotls development CA"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"nitrotls dev root {secrets.token_hex(4)}"
                ),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, _hash_for(key))
        )
        pem = root.public_bytes(serialization.Encoding.PEM)
        files.atomic_write(self.directory / CERT_FILE, pem, mode=0o644)
        return root

    # -- leaves ------------------------------------------------------------------------------

    def issue(self, csr: bytes) -> tuple[bytes, ...]:
        """Certify the CSR's SANs; returns ``(leaf DER, root DER)``."""
        request = load_csr(csr)
        names = csr_names(request)
        public_key = request.public_key()
        now = self._clock()
        not_after = min(now + self.validity, self._root.not_valid_after_utc)
        if not_after <= now:
            raise LocalCAError(f"dev CA root expired on {self._root.not_valid_after_utc:%Y-%m-%d}")
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names.dns]
        sans += [x509.IPAddress(ip) for ip in names.ips]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _common_name(names))])
        leaf = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._root.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(encipher=isinstance(public_key, rsa.RSAPublicKey)), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
            .sign(self._key, _hash_for(self._key))
        )
        return leaf.public_bytes(serialization.Encoding.DER), self.root_der

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        ski = self._root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _common_name(names: CSRNames) -> str:
    first = names.dns[0] if names.dns else str(names.ips[0])
    return first[:64]


def _hash_for(key: ec.EllipticCurvePrivateKey) -> hashes.SHA256 | hashes.SHA384:
    return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()


def _key_usage(*, cert_sign: bool = False, encipher: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
