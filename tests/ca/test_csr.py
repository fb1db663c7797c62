"""CSR intake: signature verified first, names only from subjectAltName, weak keys refused."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ca.ca_support import make_csr
from nitrotls.ca import CSRError, csr_names, load_csr


def test_pem_and_der_load_and_names_come_from_the_san() -> None:
    der, _ = make_csr(
        ["WWW.Example.com", "example.com", "10.0.0.1", "example.com"], common_name="x"
    )
    pem = x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)
    for data in (der, pem):
        names = csr_names(load_csr(data))
        assert names.dns == ("www.example.com", "example.com")
        assert names.ips == (ipaddress.ip_address("10.0.0.1"),)


def test_tampered_csr_signature_is_refused() -> None:
    der, _ = make_csr(["a.example.com"])
    tampered = der.replace(b"a.example.com", b"b.example.com")
    assert tampered != der
    with pytest.raises(CSRError, match="signature"):
        load_csr(tampered)


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n", b"\x30" * 70000]
)
def test_garbage_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(CSRError):
        load_csr(data)


def test_csr_without_san_is_refused_even_with_a_common_name() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CSRError, match="subjectAltName"):
        csr_names(load_csr(csr.public_bytes(serialization.Encoding.DER)))


@pytest.mark.parametrize(
    "name",
    [
        "exa mple.com",
        "-bad.example.com",
        "bad-.example.com",
        "*.com",
        "a.*.example.com",
        "ex_ample.com",
        "a" * 64 + ".com",
    ],
)
def test_bad_dns_names_are_refused(name: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CSRError, match="not a valid DNS name"):
        csr_names(load_csr(csr.public_bytes(serialization.Encoding.DER)))


def test_wildcards_and_single_labels_are_accepted() -> None:
    der, _ = make_csr(["*.example.com", "localhost"])
    assert csr_names(load_csr(der)).dns == ("*.example.com", "localhost")


def test_other_name_types_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("a@example.com")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CSRError, match="unsupported name types"):
        csr_names(load_csr(csr.public_bytes(serialization.Encoding.DER)))


def test_weak_and_unsupported_keys_are_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der, _ = make_csr(["a.example.com"], weak)
    with pytest.raises(CSRError, match="1024 bits"):
        load_csr(der)
    der, _ = make_csr(["a.example.com"], ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(CSRError, match="secp256k1"):
        load_csr(der)
    edkey = ed25519.Ed25519PrivateKey.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example.com")]), critical=False)
        .sign(edkey, None)
    )
    with pytest.raises(CSRError, match="not supported"):
        load_csr(csr.public_bytes(serialization.Encoding.DER))
