"""Checks shared by the generator tests: what a main enclave does with a published bundle."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from generator.conftest import Deployment
from nitrotls.bundle import VerifiedBundle, unseal, verify
from nitrotls.store import BundleStore


def open_as_main(
    deployment: Deployment,
    store: BundleStore,
    name: str,
    *,
    ca_roots: list[bytes] | None = None,
    min_seq: int = 0,
) -> tuple[VerifiedBundle, bytearray]:
    """Fetch the latest bundle, verify it (no KMS), then open it as the main enclave."""
    latest = store.latest(name)
    assert latest is not None, f"nothing published under {name}"
    verified = verify(
        latest.data,
        deployment.verifier,
        deployment.generator_policy,
        ca_roots=ca_roots,
        min_seq=min_seq,
    )
    key = unseal(verified, deployment.kms(), deployment.main)
    return verified, key


def assert_key_matches_leaf(verified: VerifiedBundle, key: bytearray) -> None:
    loaded = serialization.load_der_private_key(bytes(key), None)
    spki = loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki == verified.spki_der
