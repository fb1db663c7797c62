"""The key store: master key handling, one server per store, persistence, the blob format."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nitrotls.kms.local import blob
from nitrotls.kms.local.errors import ServiceError, StorageError
from nitrotls.kms.local.masterkey import ENV_VAR, MasterKey
from nitrotls.kms.local.policy_eval import parse_policy
from nitrotls.kms.local.storage import DISABLED, KeyStore

POLICY = parse_policy(
    json.dumps(
        {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}
    )
)
ACCOUNT = "111122223333"


def test_master_key_file_is_private_and_stable(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, "us-east-1")
    record = store.create_key(ACCOUNT, "k", POLICY)
    store.close()
    key_file = tmp_path / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys.sqlite3").stat().st_mode & 0o077 == 0
    material = MasterKey.load(tmp_path).unwrap(record.key_id, record.material)
    assert len(material) == 32
    assert bytes(material) not in (tmp_path / "keys.sqlite3").read_bytes()
    reopened = KeyStore(tmp_path, "us-east-1")
    assert reopened.get(record.key_id) == record
    reopened.close()


def test_readable_master_key_is_refused(tmp_path: Path) -> None:
    KeyStore(tmp_path, "us-east-1").close()
    (tmp_path / "master.key").chmod(0o644)
    with pytest.raises(StorageError, match="chmod 600"):
        KeyStore(tmp_path, "us-east-1")


def test_environment_master_key_and_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, base64.b64encode(os.urandom(32)).decode())
    store = KeyStore(tmp_path, "us-east-1")
    store.create_key(ACCOUNT, "k", POLICY)
    store.close()
    assert not (tmp_path / "master.key").exists()
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(StorageError, match="not the one this key store was created with"):
        KeyStore(tmp_path, "us-east-1")
    monkeypatch.setenv(ENV_VAR, "not base64!")
    with pytest.raises(StorageError, match="base64"):
        KeyStore(tmp_path, "us-east-1")
    monkeypatch.setenv(ENV_VAR, base64.b64encode(b"short").decode())
    with pytest.raises(StorageError, match="32 bytes"):
        KeyStore(tmp_path, "us-east-1")


def test_one_server_per_store(tmp_path: Path) -> None:
    first = KeyStore(tmp_path, "us-east-1")
    with pytest.raises(StorageError, match="another nitrotls KMS server"):
        KeyStore(tmp_path, "us-east-1")
    first.close()
    KeyStore(tmp_path, "us-east-1").close()


def test_state_policy_alias_and_deletion_persist(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, "eu-west-1")
    keep = store.create_key(ACCOUNT, "keep", POLICY)
    doomed = store.create_key(ACCOUNT, "doomed", POLICY)
    store.set_state(keep, DISABLED)
    assert store.create_alias(ACCOUNT, "alias/keep", keep.key_id) is not None
    assert store.create_alias(ACCOUNT, "alias/keep", doomed.key_id) is None
    assert store.create_alias(ACCOUNT, "alias/doomed", doomed.key_id) is not None
    store.schedule_deletion(doomed, 0)  # due now: purged on next look-up
    assert store.get(doomed.key_id) is None
    assert store.alias(ACCOUNT, "alias/doomed") is None
    store.close()

    again = KeyStore(tmp_path, "eu-west-1")
    kept = again.get(keep.key_id)
    assert kept is not None and kept.state == DISABLED
    assert kept.arn == f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{keep.key_id}"
    assert [a.name for a in again.aliases(ACCOUNT)] == ["alias/keep"]
    assert again.get(doomed.key_id) is None
    assert again.keys("444455556666") == []
    again.close()


def test_blob_round_trip_and_context_binding() -> None:
    aead = AESGCM(AESGCM.generate_key(256))
    key_id = "1234abcd-12ab-34cd-56ef-1234567890ab"
    sealed = blob.seal(aead, key_id, {"a": "1", "b": "2"}, b"secret")
    parsed = blob.parse(sealed)
    assert parsed.key_id == key_id
    assert blob.open_blob(aead, parsed, {"b": "2", "a": "1"}) == bytearray(b"secret")
    for context in ({}, {"a": "1"}, {"a": "1", "b": "3"}, {"a": "1", "b": "2", "c": ""}):
        with pytest.raises(ServiceError) as caught:
            blob.open_blob(aead, parsed, context)
        assert caught.value.code == "InvalidCiphertextException"


@pytest.mark.parametrize("position", [0, 4, 5, 20, 21, 33, -1])
def test_tampered_blobs_are_invalid_ciphertext(position: int) -> None:
    aead = AESGCM(AESGCM.generate_key(256))
    key_id = "1234abcd-12ab-34cd-56ef-1234567890ab"
    sealed = bytearray(blob.seal(aead, key_id, {}, b"secret"))
    sealed[position] ^= 0x40
    with pytest.raises(ServiceError) as caught:
        blob.open_blob(aead, blob.parse(bytes(sealed)), {})
    assert caught.value.code == "InvalidCiphertextException"


def test_short_and_foreign_blobs_are_invalid_ciphertext() -> None:
    for data in (b"", b"NTKM\x01", os.urandom(200)):
        with pytest.raises(ServiceError) as caught:
            blob.parse(data)
        assert caught.value.code == "InvalidCiphertextException"
