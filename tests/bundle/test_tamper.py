"""Tamper matrix: every field changed or swapped is refused with a typed error, and wherever the
binding allows, before any KMS call (a counting fake KMS stands in for the Decrypt step).

Two attackers are modelled. The store attacker edits bytes but cannot make a generator document:
every change breaks the binding and is caught by ``verify``. The stronger "re-binding" attacker
(as if an accepted generator signed whatever it was handed) shows the defences behind the binding:
the KMS context check in ``verify``, then KMS's own context, then the AEAD and key check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from bundle.bundle_pki import new_key
from bundle.conftest import World
from nitrotls.bundle import (
    BindingError,
    BundleError,
    ContextMismatchError,
    GeneratorDocumentError,
    SealError,
    decode,
    encryption_context,
    leaf_spki,
    unseal,
    verify,
)
from nitrotls.cbor import deterministic_dumps
from nitrotls.kms.errors import KMSAccessDeniedError

Edit = Callable[[dict[str, Any], dict[str, Any]], None]


def flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def edit_chain(target: dict[str, Any], other: dict[str, Any]) -> None:
    target["chain"] = other["chain"]


def reorder_chain(target: dict[str, Any], _other: dict[str, Any]) -> None:
    target["chain"] = list(reversed(target["chain"]))


def edit_ct(target: dict[str, Any], _other: dict[str, Any]) -> None:
    target["key"]["ct"] = flip(target["key"]["ct"], 5)


def edit_iv(target: dict[str, Any], _other: dict[str, Any]) -> None:
    target["key"]["iv"] = flip(target["key"]["iv"])


def edit_blob(target: dict[str, Any], other: dict[str, Any]) -> None:
    target["dek"]["blob"] = other["dek"]["blob"]


def edit_context(target: dict[str, Any], other: dict[str, Any]) -> None:
    target["dek"]["context"] = other["dek"]["context"]


def edit_kms_key(target: dict[str, Any], _other: dict[str, Any]) -> None:
    target["dek"]["kms_key_id"] = "alias/attacker"


def edit_id(target: dict[str, Any], other: dict[str, Any]) -> None:
    target["id"] = other["id"]


def edit_seq(target: dict[str, Any], _other: dict[str, Any]) -> None:
    target["seq"] += 1


def edit_name(target: dict[str, Any], _other: dict[str, Any]) -> None:
    target["name"] = "evil.test"


def edit_created(target: dict[str, Any], _other: dict[str, Any]) -> None:
    target["created"] -= 1


def swap_gen(target: dict[str, Any], other: dict[str, Any]) -> None:
    target["gen"] = other["gen"]


def move_sealed_key(target: dict[str, Any], other: dict[str, Any]) -> None:
    target["key"] = other["key"]


def move_sealed_key_and_dek(target: dict[str, Any], other: dict[str, Any]) -> None:
    target["key"] = other["key"]
    target["dek"] = other["dek"]


EDITS: dict[str, Edit] = {
    "chain": edit_chain,
    "chain-order": reorder_chain,
    "key.ct": edit_ct,
    "key.iv": edit_iv,
    "dek.blob": edit_blob,
    "dek.context": edit_context,
    "dek.kms_key_id": edit_kms_key,
    "id": edit_id,
    "seq": edit_seq,
    "name": edit_name,
    "created": edit_created,
    "gen-swapped": swap_gen,
    "sealed-key-moved": move_sealed_key,
    "sealed-key-and-dek-moved": move_sealed_key_and_dek,
}


def open_bundle(world: World, raw: bytes) -> bytearray:
    """What a main enclave does: verify (no KMS), then KMS Decrypt, then open."""
    verified = verify(raw, world.verifier, world.policy)
    return unseal(verified, world.kms, world.main)


def fields_of(raw: bytes) -> dict[str, Any]:
    value = cbor2.loads(raw)
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("field", list(EDITS))
def test_store_attacker_edit_is_refused_before_kms(world: World, field: str) -> None:
    target = world.make(name="example.test")
    other = world.make(name="example.test", seq=2)
    assert bytes(open_bundle(world, target.raw)) == target.key_der  # the untouched one opens
    calls_before = world.kms.decrypts
    fields = fields_of(target.raw)
    EDITS[field](fields, fields_of(other.raw))
    tampered = deterministic_dumps(fields)
    assert tampered != target.raw
    with pytest.raises(BindingError):
        open_bundle(world, tampered)
    assert world.kms.decrypts == calls_before


def test_corrupted_generator_document_is_refused_before_kms(world: World) -> None:
    made = world.make()
    fields = fields_of(made.raw)
    gen = fields["gen"]
    fields["gen"] = flip(gen, len(gen) - 10)  # inside the ES384 signature
    with pytest.raises(GeneratorDocumentError, match="SignatureError"):
        open_bundle(world, deterministic_dumps(fields))
    fields["gen"] = gen[: len(gen) // 2]
    with pytest.raises(GeneratorDocumentError):
        open_bundle(world, deterministic_dumps(fields))
    assert world.kms.decrypts == 0


def rebind(world: World, fields: dict[str, Any]) -> bytes:
    """The strong attacker: a generator document over whatever the fields now say."""
    del fields["gen"]
    user_data = decode_unbound_user_data(fields)
    fields["gen"] = world.generator.attest(user_data=user_data)
    return deterministic_dumps(fields)


def decode_unbound_user_data(fields: dict[str, Any]) -> bytes:
    digest = hashlib.sha384(deterministic_dumps(fields)).digest()
    return deterministic_dumps({"t": "nitrotls/bundle/1", "h": digest})


# (edit, expected error, KMS Decrypt calls that may happen before the refusal)
REBOUND: dict[str, tuple[Edit, type[BundleError] | type[Exception], int]] = {
    "chain": (edit_chain, ContextMismatchError, 0),
    "dek.context": (edit_context, ContextMismatchError, 0),
    "id": (edit_id, ContextMismatchError, 0),
    "name": (edit_name, ContextMismatchError, 0),
    "sealed-key-and-dek-moved": (move_sealed_key_and_dek, ContextMismatchError, 0),
    # Only KMS can tell a blob from another bundle: its context no longer matches the blob's.
    "dek.blob": (edit_blob, KMSAccessDeniedError, 1),
    # Only the AEAD can tell a sealed key from another bundle (other data key, other AAD).
    "sealed-key-moved": (move_sealed_key, SealError, 1),
    "key.ct": (edit_ct, SealError, 1),
    "key.iv": (edit_iv, SealError, 1),
}


@pytest.mark.parametrize("field", list(REBOUND))
def test_rebinding_attacker_is_still_refused(world: World, field: str) -> None:
    edit, error, kms_calls = REBOUND[field]
    target = world.make(name="example.test")
    other = world.make(name="example.test", seq=2)
    fields = fields_of(target.raw)
    edit(fields, fields_of(other.raw))
    with pytest.raises(error):
        open_bundle(world, rebind(world, fields))
    assert world.kms.decrypts == kms_calls


def test_rebound_chain_for_a_new_key_with_matching_context_cannot_open(world: World) -> None:
    # The attacker certifies its own key and recomputes the context: KMS refuses the context
    # (the blob was wrapped under the original one), so nothing opens.
    target = world.make()
    fields = fields_of(target.raw)
    own = new_key()
    leaf = world.intermediate.leaf(own.public_key())
    fields["chain"] = [leaf, world.intermediate.der]
    fields["dek"]["context"] = encryption_context(fields["id"], fields["name"], leaf_spki([leaf]))
    with pytest.raises(KMSAccessDeniedError):
        open_bundle(world, rebind(world, fields))
    assert world.kms.decrypts == 1


def test_seq_is_bound_but_not_a_secret(world: World) -> None:
    # Re-bound with another seq it is simply another valid bundle; the floor is what protects.
    made = world.make(seq=1)
    fields = fields_of(made.raw)
    fields["seq"] = 9
    raw = rebind(world, fields)
    assert decode(raw).seq == 9
    assert bytes(open_bundle(world, raw)) == made.key_der
