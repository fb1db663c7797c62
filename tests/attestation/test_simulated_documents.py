"""Acceptance (issue 2): simulated documents against the real verifier.

They pass with the dev root trusted and the image's measurements required, fail with
UntrustedRootError without it, debug ones are refused unless allowed, and they parse with the
same strict parser as AWS's documents.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import cbor2
import pytest

from nitrotls.attestation import (
    AWS_NITRO_ROOT_G1_SHA256,
    CertificateExpiredError,
    DebugEnclaveError,
    NonceMismatchError,
    PCRMismatchError,
    Policy,
    SignatureError,
    UntrustedRootError,
    parse_document,
)
from nitrotls.nsm import (
    SimulatedNSM,
    dev_root_fingerprint,
    instance_pcr,
    measure_image,
    trusted_verifier,
)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "server").write_bytes(b"\x7fELF simulated server binary")
    (root / "config.toml").write_text("port = 8443\n")
    return root


def test_simulated_document_passes_with_dev_root_and_image_measurements(image: Path) -> None:
    nonce = b"\x01" * 32
    document = SimulatedNSM(image).attest(nonce=nonce, user_data=b"hello")
    policy = Policy(
        accepted_pcrs=(measure_image(image),), nonce=nonce, max_age=timedelta(minutes=5)
    )
    verified = trusted_verifier(True).verify(document, policy)
    assert verified.user_data == b"hello"
    assert not verified.is_debug


def test_simulated_document_fails_without_the_dev_root(image: Path) -> None:
    document = SimulatedNSM(image).attest()
    policy = Policy(accepted_pcrs=(measure_image(image),))
    verifier = trusted_verifier(False)
    assert verifier.trusted_roots == frozenset({AWS_NITRO_ROOT_G1_SHA256})
    with pytest.raises(UntrustedRootError):
        verifier.verify(document, policy)


def test_trusted_verifier_adds_exactly_the_dev_root() -> None:
    verifier = trusted_verifier(True)
    assert verifier.trusted_roots == frozenset({AWS_NITRO_ROOT_G1_SHA256, dev_root_fingerprint()})


def test_other_images_and_policies_are_refused(image: Path, tmp_path: Path) -> None:
    document = SimulatedNSM(image).attest(nonce=b"a" * 16)
    other = tmp_path / "other.img"
    other.write_bytes(b"a different application")
    verifier = trusted_verifier(True)
    with pytest.raises(PCRMismatchError):
        verifier.verify(document, Policy(accepted_pcrs=(measure_image(other),)))
    with pytest.raises(NonceMismatchError):
        verifier.verify(document, Policy(accepted_pcrs=(measure_image(image),), nonce=b"b" * 16))
    # Any one accepted set matching accepts (rolling upgrades).
    both = Policy(accepted_pcrs=(measure_image(other), measure_image(image)))
    assert verifier.verify(document, both).nonce == b"a" * 16


def test_debug_document_refused_by_default_and_accepted_when_allowed(image: Path) -> None:
    document = SimulatedNSM(image, debug=True).attest()
    verifier = trusted_verifier(True)
    zeros = {0: bytes(48), 1: bytes(48), 2: bytes(48)}
    with pytest.raises(DebugEnclaveError):
        verifier.verify(document, Policy(accepted_pcrs=(measure_image(image),)))
    with pytest.raises(DebugEnclaveError):
        verifier.verify(document, Policy(accepted_pcrs=(zeros,)))
    accepted = verifier.verify(document, Policy(accepted_pcrs=(zeros,), allow_debug=True))
    assert accepted.is_debug


def test_parsed_fields_and_aws_key_order(image: Path) -> None:
    nsm = SimulatedNSM(image, instance_id="i-0abcdef0123456789")
    data = nsm.attest(public_key=b"\x30\x01\x00", nonce=b"n" * 20)
    parsed = parse_document(data)
    document = parsed.document
    assert document.module_id == nsm.module_id
    assert document.digest == "SHA384"
    assert sorted(document.pcrs) == list(range(16))
    assert document.pcrs[4] == instance_pcr("i-0abcdef0123456789")
    assert document.public_key == b"\x30\x01\x00"
    assert document.user_data is None
    assert document.nonce == b"n" * 20
    assert len(document.cabundle) == 4
    assert list(cbor2.loads(parsed.payload)) == [
        "module_id",
        "digest",
        "timestamp",
        "pcrs",
        "certificate",
        "cabundle",
        "public_key",
        "user_data",
        "nonce",
    ]


def test_documents_expire_with_their_leaf_and_signatures_bind_the_payload(image: Path) -> None:
    data = SimulatedNSM(image).attest()
    verifier = trusted_verifier(True)
    policy = Policy(accepted_pcrs=(measure_image(image),))
    document = verifier.verify(data, policy)
    with pytest.raises(CertificateExpiredError):
        verifier.verify(data, policy, at=document.timestamp + timedelta(hours=3, minutes=1))
    assert verifier.verify(data, policy, at=document.timestamp + timedelta(hours=2))
    cose = cbor2.loads(data)
    payload = cbor2.loads(cose[2])
    payload["pcrs"][16 - 1] = b"\x01" * 48  # edit a PCR after signing
    tampered = cbor2.dumps([cose[0], cose[1], cbor2.dumps(payload), cose[3]])
    with pytest.raises(SignatureError):
        verifier.verify(tampered, policy)


def test_leaf_reuse_gives_cached_verification_the_same_answer(image: Path) -> None:
    nsm = SimulatedNSM(image)
    verifier = trusted_verifier(True)
    policy = Policy(accepted_pcrs=(measure_image(image),))
    first, second = nsm.attest(nonce=b"1" * 16), nsm.attest(nonce=b"2" * 16)
    assert parse_document(first).document.certificate == parse_document(second).document.certificate
    assert verifier.verify(first, policy).nonce == b"1" * 16
    assert verifier.verify(second, policy).nonce == b"2" * 16
