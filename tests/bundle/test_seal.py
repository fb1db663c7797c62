"""The seal: AES-256-GCM bound to id, name and public key; opening checks the key."""

from __future__ import annotations

import os

import cbor2
import pytest

import nitrotls.bundle.seal as seal_module
from bundle.bundle_pki import new_key, pkcs8, spki
from nitrotls.bundle import (
    KeyMismatchError,
    SealedKey,
    SealError,
    encryption_context,
    open_sealed,
    seal_aad,
    seal_key,
    spki_sha384,
)
from nitrotls.secrets import SecretBuffer

BUNDLE_ID = bytes(range(16))


def data_key() -> SecretBuffer:
    return SecretBuffer(bytearray(os.urandom(32)))


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa2048"])
def test_seal_then_open_returns_the_key(kind: str) -> None:
    key = new_key(kind)
    plain, public = pkcs8(key), spki(key)
    dek = data_key()
    sealed = seal_key(plain, dek, bundle_id=BUNDLE_ID, name="web", spki_der=public)
    assert len(sealed.iv) == 12
    assert bytes(plain) not in sealed.ct
    opened = open_sealed(sealed, dek, bundle_id=BUNDLE_ID, name="web", spki_der=public)
    assert isinstance(opened, bytearray)
    assert opened == plain


def test_each_seal_uses_a_fresh_iv() -> None:
    key = new_key()
    plain, public, dek = pkcs8(key), spki(key), data_key()
    first = seal_key(plain, dek, bundle_id=BUNDLE_ID, name="web", spki_der=public)
    second = seal_key(plain, dek, bundle_id=BUNDLE_ID, name="web", spki_der=public)
    assert first.iv != second.iv
    assert first.ct != second.ct


def test_aad_and_context_follow_the_architecture() -> None:
    public = spki(new_key())
    digest = spki_sha384(public)
    assert cbor2.loads(seal_aad(BUNDLE_ID, "web", public)) == {
        "id": BUNDLE_ID,
        "name": "web",
        "spki": digest,
    }
    assert encryption_context(BUNDLE_ID, "web", public) == {
        "nitrotls:bundle": BUNDLE_ID.hex(),
        "nitrotls:name": "web",
        "nitrotls:spki-sha384": digest.hex(),
    }


def record_wipes(monkeypatch: pytest.MonkeyPatch) -> list[bytearray]:
    """Every buffer the seal module wipes, so a test can see it was zeroed."""
    wiped: list[bytearray] = []
    real_wipe = seal_module.wipe

    def recording_wipe(buffer: bytearray) -> None:
        real_wipe(buffer)
        wiped.append(buffer)

    monkeypatch.setattr(seal_module, "wipe", recording_wipe)
    return wiped


@pytest.fixture
def sealed_pair() -> tuple[SealedKey, SecretBuffer, bytes]:
    key = new_key()
    dek = data_key()
    return (
        seal_key(pkcs8(key), dek, bundle_id=BUNDLE_ID, name="web", spki_der=spki(key)),
        dek,
        spki(key),
    )


@pytest.mark.parametrize(
    "change",
    ["data_key", "bundle_id", "name", "spki", "iv", "ct", "tag"],
)
def test_any_change_fails_to_open(
    sealed_pair: tuple[SealedKey, SecretBuffer, bytes], change: str
) -> None:
    sealed, dek, public = sealed_pair
    args: dict[str, object] = {"bundle_id": BUNDLE_ID, "name": "web", "spki_der": public}
    if change == "data_key":
        dek = data_key()
    elif change == "bundle_id":
        args["bundle_id"] = bytes(16)
    elif change == "name":
        args["name"] = "api"
    elif change == "spki":
        args["spki_der"] = spki(new_key())
    elif change == "iv":
        sealed = SealedKey(iv=bytes(12), ct=sealed.ct)
    elif change == "ct":
        sealed = SealedKey(iv=sealed.iv, ct=bytes([sealed.ct[0] ^ 1]) + sealed.ct[1:])
    else:
        sealed = SealedKey(iv=sealed.iv, ct=sealed.ct[:-1] + bytes([sealed.ct[-1] ^ 1]))
    with pytest.raises(SealError):
        open_sealed(sealed, dek, **args)  # type: ignore[arg-type]


def test_wrong_key_for_the_leaf_is_refused_and_wiped(monkeypatch: pytest.MonkeyPatch) -> None:
    # A generator that sealed key A under the AAD of key B: the AEAD opens, the check refuses.
    key_a, key_b = new_key(), new_key()
    dek = data_key()
    sealed = seal_key(pkcs8(key_a), dek, bundle_id=BUNDLE_ID, name="web", spki_der=spki(key_b))
    wiped = record_wipes(monkeypatch)
    with pytest.raises(KeyMismatchError, match="does not belong"):
        open_sealed(sealed, dek, bundle_id=BUNDLE_ID, name="web", spki_der=spki(key_b))
    assert len(wiped) == 1
    assert len(wiped[0]) > 0 and not any(wiped[0])


def test_plaintext_that_is_not_a_key_is_refused_and_wiped(monkeypatch: pytest.MonkeyPatch) -> None:
    dek = data_key()
    public = spki(new_key())
    sealed = seal_key(
        bytearray(b"not a key at all"), dek, bundle_id=BUNDLE_ID, name="web", spki_der=public
    )
    wiped = record_wipes(monkeypatch)
    with pytest.raises(KeyMismatchError, match="PKCS#8"):
        open_sealed(sealed, dek, bundle_id=BUNDLE_ID, name="web", spki_der=public)
    assert wiped and not any(wiped[0])


def test_data_key_must_be_32_bytes(sealed_pair: tuple[SealedKey, SecretBuffer, bytes]) -> None:
    sealed, _dek, public = sealed_pair
    with pytest.raises(SealError, match="32-byte"):
        open_sealed(
            sealed,
            SecretBuffer(bytearray(16)),
            bundle_id=BUNDLE_ID,
            name="web",
            spki_der=public,
        )
