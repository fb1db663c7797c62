"""verify / open: a genuine bundle passes and opens; each broken promise has its typed error."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bundle.bundle_pki import CA, NOW, new_key
from bundle.conftest import World, make_image
from nitrotls.attestation import Policy, Verifier
from nitrotls.bundle import (
    BundleFormatError,
    CertificateChainError,
    ContextMismatchError,
    GeneratorDocumentError,
    KeyMismatchError,
    NameMismatchError,
    SealError,
    StaleBundleError,
    bind,
    build,
    open_key,
    unseal,
    verify,
)
from nitrotls.nsm import SimulatedNSM, measure_image
from nitrotls.secrets import SecretBuffer


def test_genuine_bundle_verifies_and_opens(world: World) -> None:
    made = world.make(seq=3, names=("example.test", "www.example.test"), key_type="p384")
    verified = verify(made.raw, world.verifier, world.policy, min_seq=3)
    assert verified.name == "example.test"
    assert verified.seq == 3
    assert verified.domains == ("example.test", "www.example.test")
    assert verified.key_type == "p384"
    assert verified.spki_der == made.spki
    assert verified.generator.pcrs[0] == world.policy.accepted_pcrs[0][0]
    key = unseal(verified, world.kms, world.main)
    assert isinstance(key, bytearray)
    assert bytes(key) == made.key_der
    assert world.kms.decrypts == 1
    loaded = serialization.load_der_private_key(bytes(key), None)
    public = loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public == verified.leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_rsa_bundle_opens(world: World) -> None:
    made = world.make(key_type="rsa2048")
    verified = verify(made.raw, world.verifier, world.policy)
    assert verified.key_type == "rsa2048"
    assert bytes(unseal(verified, world.kms, world.main)) == made.key_der


def test_bundle_still_verifies_long_after_the_generator_document_expired(world: World) -> None:
    # Nitro leaf certificates live hours; a bundle lives for its certificate's lifetime.
    made = world.make()
    later = NOW + dt.timedelta(days=60)
    verified = verify(made.raw, world.verifier, world.policy, at=later)
    assert verified.not_after > later


def test_seq_floor(world: World) -> None:
    made = world.make(seq=4)
    verify(made.raw, world.verifier, world.policy, min_seq=4)
    with pytest.raises(StaleBundleError, match="seq 4, below the floor 5"):
        verify(made.raw, world.verifier, world.policy, min_seq=5)


def test_generator_with_other_measurements_is_refused(world: World, tmp_path: Path) -> None:
    other = SimulatedNSM(make_image(tmp_path / "rogue", "print('rogue')\n"))
    rogue = dataclasses.replace(world, generator=other)
    made = rogue.make()
    with pytest.raises(GeneratorDocumentError, match="PCRMismatchError"):
        verify(made.raw, world.verifier, world.policy)
    # The main enclave is not a generator either.
    as_main = dataclasses.replace(world, generator=world.main).make()
    with pytest.raises(GeneratorDocumentError):
        verify(as_main.raw, world.verifier, world.policy)


def test_debug_generator_is_refused_unless_the_policy_allows_it(
    world: World, tmp_path: Path
) -> None:
    image = make_image(tmp_path / "debug", "print('generator')\n")
    debug = dataclasses.replace(world, generator=SimulatedNSM(image, debug=True)).make()
    with pytest.raises(GeneratorDocumentError, match=r"[Dd]ebug"):
        verify(debug.raw, world.verifier, Policy(allow_any_measurement=True))
    allowing = Policy(allow_any_measurement=True, allow_debug=True)
    assert verify(debug.raw, world.verifier, allowing).generator.is_debug


def test_untrusted_dev_root_is_refused(world: World) -> None:
    made = world.make()
    with pytest.raises(GeneratorDocumentError, match="UntrustedRoot"):
        verify(made.raw, Verifier(), world.policy)


def test_generator_document_far_from_creation_is_refused(world: World) -> None:
    two_hours_ago = int((NOW - dt.timedelta(hours=2)).timestamp() * 1000)
    made = world.make(created_ms=two_hours_ago)
    with pytest.raises(GeneratorDocumentError, match="too far"):
        verify(made.raw, world.verifier, world.policy)


def test_generator_document_from_the_future_is_refused(world: World, tmp_path: Path) -> None:
    ahead = NOW + dt.timedelta(hours=1)
    image = make_image(tmp_path / "clock", "print('generator')\n")
    skewed = SimulatedNSM(image, clock=lambda: ahead)
    made = dataclasses.replace(world, generator=skewed).make(
        created_ms=int(ahead.timestamp() * 1000)
    )
    policy = Policy(accepted_pcrs=(measure_image(image),))
    with pytest.raises(GeneratorDocumentError, match="future"):
        verify(made.raw, world.verifier, policy, at=NOW)
    verify(made.raw, world.verifier, policy, at=ahead)


def test_chain_is_checked_at_the_instant_and_for_names(world: World) -> None:
    made = world.make(names=("example.test",))
    with pytest.raises(CertificateChainError, match="valid from"):
        verify(made.raw, world.verifier, world.policy, at=NOW + dt.timedelta(days=91))
    with pytest.raises(NameMismatchError):
        verify(made.raw, world.verifier, world.policy, names=["other.test"])
    verify(made.raw, world.verifier, world.policy, ca_roots=[world.root.der])
    with pytest.raises(CertificateChainError, match="CA root"):
        verify(made.raw, world.verifier, world.policy, ca_roots=[CA.root("stranger").der])


def test_build_refuses_a_context_for_another_key(world: World) -> None:
    made = world.make()
    other_leaf = world.intermediate.leaf(new_key().public_key())
    with pytest.raises(ContextMismatchError):
        build(
            bundle_id=made.bundle.bundle_id,
            seq=1,
            name=made.bundle.name,
            chain=(other_leaf, world.intermediate.der),
            key=made.bundle.key,
            dek=made.bundle.dek,
        )


def test_open_with_the_wrong_data_key_fails(world: World) -> None:
    verified = verify(world.make().raw, world.verifier, world.policy)
    with pytest.raises(SealError):
        open_key(verified, SecretBuffer(bytearray(32)))


def test_a_sealed_key_that_is_not_the_leaf_key_is_refused(world: World) -> None:
    # Verification cannot see inside the seal; opening refuses to hand out the wrong key.
    made = world.make(seal_another_key=True)
    verified = verify(made.raw, world.verifier, world.policy)
    with pytest.raises(KeyMismatchError, match="does not belong"):
        unseal(verified, world.kms, world.main)


def test_verify_refuses_non_bundles(world: World) -> None:
    with pytest.raises(BundleFormatError):
        verify(b"\xa0", world.verifier, world.policy)


def test_bind_refuses_a_source_that_ignores_user_data(world: World) -> None:
    made = world.make()

    class Careless:
        def attest(self, **_: object) -> bytes:
            return world.generator.attest(user_data=b"something else")

    unbound = dataclasses.replace(made.bundle, gen=None)
    with pytest.raises(GeneratorDocumentError, match="user_data"):
        bind(unbound, Careless())  # type: ignore[arg-type]
