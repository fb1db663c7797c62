"""Generator building blocks in isolation: keys and CSRs, renewal decisions, logging, pauses."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bundle.bundle_pki import CA, new_key
from nitrotls.bundle import Bundle, SealedKey, WrappedDataKey
from nitrotls.generator import Decision, GeneratorConfigError, StepLog, decide
from nitrotls.generator.keys import BornKey
from nitrotls.generator.renewal import Previous, jitter_share
from nitrotls.generator.steps import (
    PAUSE_ENV,
    PAUSE_MARKER,
    PAUSE_SECONDS_ENV,
    JsonFormatter,
    TextFormatter,
    pause_point,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("key_type", "size"), [("p256", 256), ("p384", 384), ("rsa2048", 2048), ("rsa3072", 3072)]
)
def test_born_key_serialises_and_signs_a_csr(key_type: str, size: int) -> None:
    with BornKey(key_type) as born:
        key = serialization.load_der_private_key(bytes(born.pkcs8), None)
        assert key.key_size == size  # type: ignore[union-attr]
        assert (
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            == born.spki
        )
        csr = x509.load_der_x509_csr(born.csr(["a.test", "*.b.test"]))
        assert csr.is_signature_valid
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["a.test", "*.b.test"]
        buffer = born.pkcs8
    assert len(buffer) > 0 and not any(buffer)  # wiped on exit


def test_born_key_refuses_after_drop_and_without_domains() -> None:
    born = BornKey("p256")
    with pytest.raises(GeneratorConfigError, match="domain"):
        born.csr([])
    born.drop()
    with pytest.raises(GeneratorConfigError, match="dropped"):
        born.csr(["a.test"])


def test_unknown_key_type_is_refused() -> None:
    with pytest.raises(GeneratorConfigError, match="key type"):
        BornKey("ed448")


def make_previous(
    start: dt.datetime, days: int, names: tuple[str, ...] = ("a.test",), key_type: str = "p256"
) -> Previous:

    intermediate = CA.root().intermediate()
    leaf_der = intermediate.leaf(
        new_key(key_type).public_key(),
        names,
        not_before=start,
        not_after=start + dt.timedelta(days=days),
    )
    leaf = x509.load_der_x509_certificate(leaf_der)

    bundle = Bundle(
        bundle_id=bytes(16),
        seq=3,
        name="a.test",
        created_ms=0,
        chain=(leaf_der,),
        key=SealedKey(iv=bytes(12), ct=bytes(40)),
        dek=WrappedDataKey("k", b"b", {"a": "b"}),
    )
    return Previous("id", 3, bundle, leaf)


def decide_at(previous: Previous | None, now: dt.datetime, **kw: object) -> Decision:
    options: dict[str, object] = {
        "domains": ("a.test",),
        "key_type": "p256",
        "fraction": 2 / 3,
        "jitter": 0.0,
    }
    options.update(kw)
    return decide(previous, now=now, **options)  # type: ignore[arg-type]


def test_renewal_is_due_at_two_thirds() -> None:
    previous = make_previous(NOW, 90)
    before = decide_at(previous, NOW + dt.timedelta(days=59))
    assert not before.due and before.at == NOW + dt.timedelta(days=60)
    assert decide_at(previous, NOW + dt.timedelta(days=60, seconds=1)).due
    assert decide_at(None, NOW).due


def test_jitter_is_bounded_and_fixed_per_bundle() -> None:
    previous = make_previous(NOW, 90)
    first = decide_at(previous, NOW, jitter=0.1)
    again = decide_at(previous, NOW, jitter=0.1)
    assert first.at == again.at
    assert first.at is not None
    assert NOW + dt.timedelta(days=60) <= first.at <= NOW + dt.timedelta(days=69)
    shares = {jitter_share(bytes([i]) * 16) for i in range(50)}
    assert all(0 <= s < 1 for s in shares) and len(shares) == 50


def test_changed_names_or_key_type_or_garbage_make_it_due() -> None:
    previous = make_previous(NOW, 90)
    assert decide_at(previous, NOW, domains=("a.test", "b.test")).due
    assert decide_at(previous, NOW, key_type="p384").due
    assert decide_at(Previous("id", 4, None, None), NOW).due
    assert not decide_at(previous, NOW, domains=("A.test",)).due


def test_json_and_text_log_lines() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("nitrotls.test-steps")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        StepLog(logger).step("seal", "sealed", kms_key_id="alias/x")
        handler.setFormatter(TextFormatter())
        StepLog(logger).warning("retry", "KMS down")
    finally:
        logger.removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    entry = json.loads(first)
    assert entry["step"] == "seal" and entry["message"] == "sealed"
    assert entry["kms_key_id"] == "alias/x" and entry["level"] == "info"
    assert second.endswith("retry    WARNING: KMS down")


def test_pause_point_is_inert_unless_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(PAUSE_ENV, raising=False)
    pause_point("after-key")
    monkeypatch.setenv(PAUSE_ENV, "after-seal")
    monkeypatch.setenv(PAUSE_SECONDS_ENV, "0")
    pause_point("after-key")
    assert capsys.readouterr().err == ""
    pause_point("after-seal")
    assert capsys.readouterr().err == f"{PAUSE_MARKER} after-seal\n"
