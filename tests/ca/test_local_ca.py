"""The local dev CA: a persistent root, leaves in the shape TLS clients expect."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from ca.ca_support import make_csr
from nitrotls.ca import CSRError, LocalCA, LocalCAError
from nitrotls.ca.local import CERT_FILE, KEY_FILE


def _verify(chain: tuple[bytes, ...], name: x509.GeneralName, root: x509.Certificate) -> None:
    leaf = x509.load_der_x509_certificate(chain[0])
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(name)
    verifier.verify(leaf, [x509.load_der_x509_certificate(c) for c in chain[1:]])


def test_leaf_shape(nitrotls_home: Path) -> None:
    ca = LocalCA()
    csr, key = make_csr(["app.example.com", "*.app.example.com", "127.0.0.1"])
    chain = ca.issue(csr)
    assert len(chain) == 2 and chain[1] == ca.root_der
    leaf = x509.load_der_x509_certificate(chain[0])
    root = ca.root_certificate
    assert leaf.public_key() == key.public_key()
    assert leaf.issuer == root.subject
    ext = leaf.extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["app.example.com", "*.app.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    basic = ext.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(days=90) <= lifetime <= dt.timedelta(days=90, minutes=6)
    assert leaf.not_valid_before_utc <= dt.datetime.now(dt.UTC)
    _verify(chain, x509.DNSName("app.example.com"), root)
    _verify(chain, x509.DNSName("x.app.example.com"), root)
    _verify(chain, x509.IPAddress(ipaddress.ip_address("127.0.0.1")), root)
    with pytest.raises(x509.verification.VerificationError):
        _verify(chain, x509.DNSName("other.example.com"), root)


def test_rsa_leaf_gets_key_encipherment() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr, _ = make_csr(["rsa.example.com"], key)
    leaf = x509.load_der_x509_certificate(LocalCA().issue(csr)[0])
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_root_persists_and_key_is_private(nitrotls_home: Path) -> None:
    first = LocalCA()
    second = LocalCA()
    assert first.root_der == second.root_der
    assert first.directory == nitrotls_home / "ca"
    key_mode = stat.S_IMODE((first.directory / KEY_FILE).stat().st_mode)
    assert key_mode == 0o600
    root = first.root_certificate
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    csr, _ = make_csr(["a.example.com"])
    _verify(second.issue(csr), x509.DNSName("a.example.com"), first.root_certificate)


def test_p256_root_and_custom_validity(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path, key_type="P-256", validity=dt.timedelta(days=7))
    csr, _ = make_csr(["a.example.com"])
    leaf = x509.load_der_x509_certificate(ca.issue(csr)[0])
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=7, minutes=6)
    assert ca.root_certificate.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]


def test_world_readable_root_key_is_refused(tmp_path: Path) -> None:
    LocalCA(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(LocalCAError, match="0600"):
        LocalCA(tmp_path)


def test_root_certificate_for_another_key_is_refused(tmp_path: Path) -> None:
    LocalCA(tmp_path / "a")
    LocalCA(tmp_path / "b")
    (tmp_path / "a" / CERT_FILE).write_bytes((tmp_path / "b" / CERT_FILE).read_bytes())
    with pytest.raises(LocalCAError, match="does not match"):
        LocalCA(tmp_path / "a")


def test_crash_after_key_before_cert_recovers(tmp_path: Path) -> None:
    first = LocalCA(tmp_path)
    (tmp_path / CERT_FILE).unlink()
    again = LocalCA(tmp_path)
    assert again.root_certificate.public_key() == first.root_certificate.public_key()


def test_garbled_files_are_typed_errors(tmp_path: Path) -> None:
    LocalCA(tmp_path)
    (tmp_path / CERT_FILE).write_bytes(b"not pem")
    with pytest.raises(LocalCAError):
        LocalCA(tmp_path)
    (tmp_path / KEY_FILE).write_bytes(b"not pem")
    with pytest.raises(LocalCAError):
        LocalCA(tmp_path)


def test_bad_csrs_and_options_are_typed_errors(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    der, _ = make_csr(["a.example.com"])
    with pytest.raises(CSRError):
        ca.issue(der[:-5] + b"xxxxx")
    with pytest.raises(CSRError):
        ca.issue(b"junk")
    with pytest.raises(LocalCAError):
        LocalCA(tmp_path, key_type="RSA")
    with pytest.raises(LocalCAError):
        LocalCA(tmp_path, validity=dt.timedelta(days=500))


def test_validity_never_exceeds_the_root(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca = LocalCA(tmp_path, clock=lambda: now)
    late = LocalCA(tmp_path, clock=lambda: now + dt.timedelta(days=3640))
    csr, _ = make_csr(["a.example.com"])
    leaf = x509.load_der_x509_certificate(late.issue(csr)[0])
    assert leaf.not_valid_after_utc == ca.root_certificate.not_valid_after_utc
    expired = LocalCA(tmp_path, clock=lambda: now + dt.timedelta(days=3660))
    with pytest.raises(LocalCAError, match="expired"):
        expired.issue(csr)
