"""The simulated NSM: AWS document shape, chain, leaf reuse, PCRs, limits, persistence."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from nitrotls import home
from nitrotls.nsm import (
    DEFAULT_INSTANCE_ID,
    SIMULATED_MODULE_PREFIX,
    AttestationSource,
    DevCAError,
    NSMArgumentError,
    NSMInputTooLargeError,
    PCRIndexError,
    PCRLockedError,
    SimulatedNSM,
    dev_root_fingerprint,
    instance_pcr,
    measure_image,
    measure_signing_cert,
)

AWS_KEYS = [
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
ZERO = bytes(48)


def decode(document: bytes) -> tuple[list[Any], dict[str, Any]]:
    cose = cbor2.loads(document)
    return cose, cbor2.loads(cose[2])


def test_document_has_the_exact_aws_shape(image_dir: Path) -> None:
    nsm = SimulatedNSM(image_dir)
    document = nsm.attest(nonce=b"n" * 16)
    assert document[0] == 0x84  # untagged COSE_Sign1
    cose, payload = decode(document)
    protected, unprotected, payload_bytes, signature = cose
    assert protected == bytes.fromhex("a1013822")  # {1: -35}
    assert unprotected == {}
    assert len(signature) == 96
    assert payload_bytes[0] == 0xA9  # a definite map of 9 entries
    assert list(payload) == AWS_KEYS
    assert payload["digest"] == "SHA384"
    assert sorted(payload["pcrs"]) == list(range(16))
    assert all(len(value) == 48 for value in payload["pcrs"].values())
    assert payload["public_key"] is None and payload["user_data"] is None
    assert payload["nonce"] == b"n" * 16
    assert len(payload["cabundle"]) == 4
    assert re.fullmatch(r"i-[0-9a-f]{17}-enc[0-9a-f]{16}", payload["module_id"])
    assert payload["module_id"].startswith(SIMULATED_MODULE_PREFIX)
    assert isinstance(nsm, AttestationSource)


def test_pcrs_come_from_image_instance_and_signing_cert(image_dir: Path) -> None:
    nsm = SimulatedNSM(image_dir, instance_id="i-020b6af9246d90e92")
    _, payload = decode(nsm.attest())
    measured = measure_image(image_dir)
    for index in (0, 1, 2):
        assert payload["pcrs"][index] == measured[index]
    assert payload["pcrs"][4] == instance_pcr("i-020b6af9246d90e92")
    assert payload["pcrs"][3] == ZERO and payload["pcrs"][8] == ZERO
    assert payload["module_id"].startswith("i-020b6af9246d90e92-enc")


def test_pcr4_of_simulated_instance_matches_real_document(
    image_dir: Path, manifest: list[dict[str, Any]]
) -> None:
    entry = next(e for e in manifest if e["file"] == "docs/valid-attestation-doc-bytes")
    instance = entry["module_id"].split("-enc")[0]
    nsm = SimulatedNSM(image_dir, instance_id=instance)
    assert nsm.describe_pcr(4) == (True, bytes.fromhex(entry["pcr4"]))


def test_signing_cert_sets_pcr8(image_dir: Path, signing_cert_pem: Path) -> None:
    nsm = SimulatedNSM(image_dir, signing_cert=signing_cert_pem)
    _, payload = decode(nsm.attest())
    assert payload["pcrs"][8] == measure_signing_cert(signing_cert_pem) != ZERO


def test_debug_mode_zeroes_image_measurements(image_dir: Path, signing_cert_pem: Path) -> None:
    nsm = SimulatedNSM(image_dir, debug=True, signing_cert=signing_cert_pem)
    _, payload = decode(nsm.attest())
    for index in (0, 1, 2, 8):  # real debug documents show PCR8 zero too
        assert payload["pcrs"][index] == ZERO
    assert payload["pcrs"][4] == instance_pcr(DEFAULT_INSTANCE_ID)
    assert nsm.image_pcrs == measure_image(image_dir)


def test_chain_mirrors_aws_extensions_and_names(image_dir: Path) -> None:
    _, payload = decode(SimulatedNSM(image_dir).attest())
    certs = [x509.load_der_x509_certificate(der) for der in payload["cabundle"]]
    leaf = x509.load_der_x509_certificate(payload["certificate"])
    root, regional, zonal, instance = certs
    assert root.issuer == root.subject
    for child, parent in zip([regional, zonal, instance, leaf], certs, strict=True):
        assert child.issuer == parent.subject
        child.verify_directly_issued_by(parent)
    for cert in [*certs, leaf]:
        assert "nitrotls-dev" in cert.subject.rfc4514_string()
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    expected_path_lengths = [None, 2, 1, 0]
    for cert, path_length in zip(certs, expected_path_lengths, strict=True):
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca
        assert constraints.value.path_length == path_length
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign
    leaf_constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert leaf_constraints.critical and not leaf_constraints.value.ca
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=3)


def test_leaf_is_reused_within_its_window_and_renewed_near_its_end(
    image_dir: Path, clock: Any
) -> None:
    nsm = SimulatedNSM(image_dir, clock=clock)
    first = decode(nsm.attest())[1]["certificate"]
    clock.advance(timedelta(hours=2, minutes=45))
    assert decode(nsm.attest())[1]["certificate"] == first
    clock.advance(timedelta(minutes=10))  # 5 minutes left: under the 10-minute margin
    renewed = decode(nsm.attest())[1]
    assert renewed["certificate"] != first
    leaf = x509.load_der_x509_certificate(renewed["certificate"])
    assert leaf.not_valid_before_utc <= clock.now < leaf.not_valid_after_utc


def test_intermediates_rotate_when_they_cannot_cover_the_next_leaf(
    image_dir: Path, clock: Any
) -> None:
    nsm = SimulatedNSM(image_dir, clock=clock)
    before = decode(nsm.attest())[1]["cabundle"]
    clock.advance(timedelta(hours=23))
    after = decode(nsm.attest())[1]["cabundle"]
    assert after[:3] == before[:3]  # root, regional, zonal still cover the new leaf
    assert after[3] != before[3]  # the one-day instance CA does not: re-issued
    instance = x509.load_der_x509_certificate(after[3])
    assert instance.not_valid_after_utc >= clock.now + timedelta(hours=3)


def test_optional_fields_are_limited_to_512_bytes(image_dir: Path) -> None:
    nsm = SimulatedNSM(image_dir)
    _, payload = decode(nsm.attest(user_data=b"u" * 512, nonce=b"n" * 512, public_key=b"k" * 512))
    assert (payload["user_data"], payload["nonce"], payload["public_key"]) == (
        b"u" * 512,
        b"n" * 512,
        b"k" * 512,
    )
    for name in ("user_data", "nonce", "public_key"):
        with pytest.raises(NSMInputTooLargeError, match=f"{name} is 513 bytes"):
            nsm.attest(**{name: b"x" * 513})
    with pytest.raises(NSMArgumentError, match="must be bytes"):
        nsm.attest(nonce="text")  # type: ignore[arg-type]
    with pytest.raises(NSMArgumentError, match="at least 1 byte"):
        nsm.attest(public_key=b"")  # verifiers refuse an empty public_key
    assert decode(nsm.attest(user_data=b"", nonce=b""))[1]["user_data"] == b""


def test_application_pcrs_extend_lock_and_appear_once_locked(image_dir: Path) -> None:
    nsm = SimulatedNSM(image_dir)
    assert nsm.describe_pcr(0) == (True, measure_image(image_dir)[0])
    with pytest.raises(PCRLockedError):
        nsm.extend_pcr(0, b"x")
    assert nsm.describe_pcr(16) == (False, ZERO)
    first = nsm.extend_pcr(16, b"config")
    assert first == hashlib.sha384(ZERO + b"config").digest()
    second = nsm.extend_pcr(16, b"more")
    assert second == hashlib.sha384(first + b"more").digest()
    assert 16 not in decode(nsm.attest())[1]["pcrs"]
    nsm.lock_pcr(16)
    assert nsm.describe_pcr(16) == (True, second)
    with pytest.raises(PCRLockedError):
        nsm.extend_pcr(16, b"x")
    assert decode(nsm.attest())[1]["pcrs"][16] == second
    with pytest.raises(PCRIndexError):
        nsm.describe_pcr(32)
    with pytest.raises(PCRIndexError):
        nsm.extend_pcr(-1, b"x")
    with pytest.raises(NSMInputTooLargeError):
        nsm.extend_pcr(17, b"x" * 5000)
    assert nsm.describe().locked_pcrs == frozenset(range(17))


def test_get_random(image_dir: Path) -> None:
    nsm = SimulatedNSM(image_dir)
    assert len(nsm.get_random(100)) == 100
    assert nsm.get_random(32) != nsm.get_random(32)
    with pytest.raises(NSMArgumentError):
        nsm.get_random(-1)


def test_bad_instance_ids_are_refused(image_dir: Path) -> None:
    for bad in ("i-xyz", "020b6af9246d90e92", "i-020B6AF9246D90E92", "i-0123"):
        with pytest.raises(NSMArgumentError, match="instance id"):
            SimulatedNSM(image_dir, instance_id=bad)


def test_dev_root_is_persisted_private_and_shared(image_dir: Path, nitrotls_home: Path) -> None:
    one = decode(SimulatedNSM(image_dir).attest())[1]
    two = decode(SimulatedNSM(image_dir, instance_id="i-0123456789abcdef0").attest())[1]
    assert one["cabundle"][0] == two["cabundle"][0]
    assert dev_root_fingerprint() == hashlib.sha256(one["cabundle"][0]).digest()
    keys = sorted((nitrotls_home / "nsm").glob("*.key.pem"))
    assert len(keys) == 5  # root, regional, zonal, two instances
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600
    assert not list((nitrotls_home / "nsm").glob("*.tmp"))


def test_a_new_data_directory_gets_a_new_root(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = dev_root_fingerprint()
    monkeypatch.setenv(home.ENV_VAR, str(tmp_path / "other-home"))
    assert dev_root_fingerprint() != first


def test_damaged_root_fails_closed(image_dir: Path, nitrotls_home: Path) -> None:
    dev_root_fingerprint()
    (nitrotls_home / "nsm" / "dev-root.key.pem").write_bytes(b"garbage")
    with pytest.raises(DevCAError, match="damaged"):
        SimulatedNSM(image_dir).attest()


def test_damaged_intermediate_is_reissued(image_dir: Path, nitrotls_home: Path) -> None:
    before = decode(SimulatedNSM(image_dir).attest())[1]["cabundle"]
    (nitrotls_home / "nsm" / "zonal.key.pem").write_bytes(b"garbage")
    after = decode(SimulatedNSM(image_dir).attest())[1]["cabundle"]
    assert after[:2] == before[:2]
    assert after[2] != before[2] and after[3] != before[3]


def test_concurrent_processes_agree_on_one_chain(image_dir: Path) -> None:
    script = (
        "import sys, cbor2\n"
        "from nitrotls.nsm import SimulatedNSM\n"
        "doc = SimulatedNSM(sys.argv[1]).attest()\n"
        "print(b''.join(cbor2.loads(cbor2.loads(doc)[2])['cabundle']).hex())\n"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(image_dir)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert len(set(outputs)) == 1 and outputs[0].strip()


def test_attest_is_thread_safe_and_reuses_one_leaf(image_dir: Path) -> None:
    nsm = SimulatedNSM(image_dir)
    leaves: list[bytes] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                leaves.append(decode(nsm.attest(nonce=b"x" * 16))[1]["certificate"])
                nsm.extend_pcr(20, b"y")
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(leaves) == 60 and len(set(leaves)) == 1
    expected = ZERO
    for _ in range(60):
        expected = hashlib.sha384(expected + b"y").digest()
    assert nsm.describe_pcr(20) == (False, expected)


_AUDIT: dict[str, Any] = {"active": False, "events": []}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _AUDIT["active"] and (event == "open" or event.startswith(("os.", "shutil."))):
        _AUDIT["events"].append((event, args))


def test_attest_does_no_file_io_once_warm(image_dir: Path) -> None:
    if not _AUDIT.get("installed"):
        sys.addaudithook(_audit)
        _AUDIT["installed"] = True
    nsm = SimulatedNSM(image_dir)
    nsm.attest()
    _AUDIT["events"] = []
    _AUDIT["active"] = True
    try:
        for _ in range(5):
            nsm.attest(user_data=b"u", nonce=b"n" * 16, public_key=b"k")
    finally:
        _AUDIT["active"] = False
    assert _AUDIT["events"] == []
