"""The sealed ACME account in the (untrusted) store: reused across runs, refused when tampered."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization

from generator.conftest import ALIAS, Deployment
from nitrotls.bundle import BundleError
from nitrotls.cbor import deterministic_dumps
from nitrotls.generator import AccountRecordError, AccountVault, StepLog
from nitrotls.generator.account import decode_account, object_key
from nitrotls.kms import KMSError

DIRECTORY = "https://acme.example.test/directory"
OTHER = "https://other-acme.example.test/directory"


def public(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def vault(deployment: Deployment, *, main: bool = False) -> AccountVault:
    source = deployment.main if main else deployment.generator
    return AccountVault(deployment.store(), deployment.kms(), source, ALIAS, StepLog())


def test_account_is_made_once_then_unsealed(deployment: Deployment) -> None:
    made = vault(deployment).load(DIRECTORY)
    assert made.uri is None
    vault(deployment).remember_uri(made, "https://acme.example.test/acct/1")
    loaded = vault(deployment).load(DIRECTORY)
    assert public(loaded.key) == public(made.key)
    assert loaded.uri == "https://acme.example.test/acct/1"
    other = vault(deployment).load(OTHER)  # another CA, another account
    assert public(other.key) != public(made.key)


def test_only_the_generator_can_unseal_it(deployment: Deployment) -> None:
    vault(deployment).load(DIRECTORY)
    with pytest.raises(KMSError):
        vault(deployment, main=True).load(DIRECTORY)


def rewrite(deployment: Deployment, where: str, /, **changes: object) -> None:
    store = deployment.store()
    fields = cbor2.loads(store.get_object(object_key(where)) or b"")
    fields.update(changes)
    store.put_object(object_key(where), deterministic_dumps(fields))


def fields_of(deployment: Deployment, directory: str) -> dict[str, object]:
    value = cbor2.loads(deployment.store().get_object(object_key(directory)) or b"")
    assert isinstance(value, dict)
    return value


def test_tampered_records_are_refused(deployment: Deployment) -> None:
    vault(deployment).load(DIRECTORY)
    vault(deployment).load(OTHER)
    store = deployment.store()
    original = store.get_object(object_key(DIRECTORY)) or b""
    other = fields_of(deployment, OTHER)
    cases: list[tuple[dict[str, object], type[Exception]]] = [
        ({"directory": OTHER}, AccountRecordError),  # a record for another CA
        ({"spki": other["spki"]}, AccountRecordError),  # context no longer derived from it
        ({"key": other["key"]}, BundleError),  # AEAD under another data key and AAD
        ({"dek": other["dek"]}, AccountRecordError),  # context of another account
        ({"spki": other["spki"], "key": other["key"], "dek": other["dek"]}, AccountRecordError),
        ({"v": 2}, AccountRecordError),
        ({"extra": 1}, AccountRecordError),
    ]
    for changes, error in cases:
        store.put_object(object_key(DIRECTORY), original)
        rewrite(deployment, DIRECTORY, **changes)
        with pytest.raises(error):
            vault(deployment).load(DIRECTORY)
    store.put_object(object_key(DIRECTORY), original)
    vault(deployment).load(DIRECTORY)  # the untouched record still opens


def test_garbage_records_are_refused() -> None:
    for raw in (b"", b"\xa0", b"\xff" * 10, deterministic_dumps({"v": 1})):
        with pytest.raises(AccountRecordError):
            decode_account(raw)
