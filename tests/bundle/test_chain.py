"""Chain checks: dates, signatures, CA flags, names, and (optionally) a path to given roots."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from bundle.bundle_pki import CA, NOW, new_key
from nitrotls.bundle import CertificateChainError, NameMismatchError, check_chain


@pytest.fixture(scope="module")
def pki() -> tuple[CA, CA]:
    root = CA.root()
    return root, root.intermediate()


def chain_for(pki: tuple[CA, CA], names: tuple[str, ...] = ("example.test",), **kw: object):
    _root, inter = pki
    return (inter.leaf(new_key().public_key(), names, **kw), inter.der)  # type: ignore[arg-type]


def test_good_chain_reports_leaf_and_names(pki: tuple[CA, CA]) -> None:
    chain = chain_for(pki, ("example.test", "www.example.test"))
    info = check_chain(chain, at=NOW)
    assert info.domains == ("example.test", "www.example.test")
    assert info.spki_der
    check_chain(chain, at=NOW, names=["WWW.example.test"])
    check_chain(chain, at=NOW, ca_roots=[pki[0].der])
    check_chain(chain, at=NOW, names=["www.example.test"], ca_roots=[pki[0].der])


def test_wildcard_covers_one_label(pki: tuple[CA, CA]) -> None:
    chain = chain_for(pki, ("*.example.test",))
    check_chain(chain, at=NOW, names=["a.example.test"])
    check_chain(chain, at=NOW, ca_roots=[pki[0].der])  # path checked through a covered name
    for name in ("example.test", "a.b.example.test"):
        with pytest.raises(NameMismatchError):
            check_chain(chain, at=NOW, names=[name])


def test_names_not_covered_are_refused(pki: tuple[CA, CA]) -> None:
    with pytest.raises(NameMismatchError, match=r"other\.test"):
        check_chain(chain_for(pki), at=NOW, names=["other.test"])
    with pytest.raises(NameMismatchError, match="no DNS name"):
        check_chain(chain_for(pki, ()), at=NOW)


@pytest.mark.parametrize(
    "at",
    [NOW - dt.timedelta(days=2), NOW + dt.timedelta(days=91)],
    ids=["before", "after"],
)
def test_leaf_out_of_date_is_refused(pki: tuple[CA, CA], at: dt.datetime) -> None:
    with pytest.raises(CertificateChainError, match="valid from"):
        check_chain(chain_for(pki), at=at)


def test_broken_signature_and_wrong_order_are_refused(pki: tuple[CA, CA]) -> None:
    other = CA.root("another root").intermediate("another intermediate")
    leaf = other.leaf(new_key().public_key())
    with pytest.raises(CertificateChainError, match=r"not issued by|valid signature"):
        check_chain((leaf, pki[1].der), at=NOW)
    chain = chain_for(pki)
    with pytest.raises(CertificateChainError):
        check_chain((chain[1], chain[0]), at=NOW)


def test_non_ca_issuer_is_refused(pki: tuple[CA, CA]) -> None:
    # A leaf for some.test used to "sign" a leaf for example.test: not a CA, refused.
    _root, inter = pki
    fake_ca_key = new_key()
    fake_ca_cert = x509.load_der_x509_certificate(
        inter.leaf(fake_ca_key.public_key(), ("some.test",))
    )
    fake_ca = CA(fake_ca_key, fake_ca_cert)
    leaf = fake_ca.leaf(new_key().public_key())
    with pytest.raises(CertificateChainError, match="not a CA"):
        check_chain((leaf, fake_ca.der, inter.der), at=NOW)


def test_leaf_must_be_a_tls_server_certificate(pki: tuple[CA, CA]) -> None:
    with pytest.raises(CertificateChainError, match="serverAuth"):
        check_chain(chain_for(pki, eku=ExtendedKeyUsageOID.CLIENT_AUTH), at=NOW)
    with pytest.raises(CertificateChainError, match="CA certificate"):
        check_chain(chain_for(pki, ca=True), at=NOW)


def test_roots_when_given_must_anchor_the_chain(pki: tuple[CA, CA]) -> None:
    chain = chain_for(pki)
    with pytest.raises(CertificateChainError, match="CA root"):
        check_chain(chain, at=NOW, ca_roots=[CA.root("stranger").der])
    with pytest.raises(CertificateChainError, match="not a DER certificate"):
        check_chain(chain, at=NOW, ca_roots=[b"junk"])


def test_garbage_certificates_are_refused() -> None:
    with pytest.raises(CertificateChainError, match="chain\\[0\\]"):
        check_chain((b"junk",), at=NOW)
    with pytest.raises(CertificateChainError, match="empty"):
        check_chain((), at=NOW)
