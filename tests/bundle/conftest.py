"""Bundle fixtures: simulated generator and main enclaves, a PKI, and a counting fake KMS."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bundle.bundle_pki import CA, new_key, pkcs8, spki
from nitrotls.attestation import Policy, Verifier
from nitrotls.bundle import (
    Bundle,
    WrappedDataKey,
    bind,
    build,
    encryption_context,
    new_bundle_id,
    seal_key,
)
from nitrotls.kms.errors import KMSAccessDeniedError
from nitrotls.nsm import SimulatedNSM, measure_image, trusted_verifier
from nitrotls.secrets import SecretBuffer


def make_image(path: Path, content: str) -> Path:
    path.mkdir(parents=True)
    (path / "app.py").write_text(content)
    return path


@dataclass
class FakeKMS:
    """Stands in for KMS: remembers each data key with its context and counts every call."""

    keys: dict[bytes, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    decrypts: int = 0

    def generate(self, context: Mapping[str, str]) -> tuple[SecretBuffer, bytes]:
        blob = os.urandom(64)
        plain = os.urandom(32)
        self.keys[blob] = (plain, dict(context))
        return SecretBuffer(bytearray(plain)), blob

    def decrypt(
        self,
        blob: bytes,
        context: Mapping[str, str],
        source: object,
        key_id: str | None = None,
    ) -> SecretBuffer:
        self.decrypts += 1
        entry = self.keys.get(bytes(blob))
        if entry is None or entry[1] != dict(context):
            raise KMSAccessDeniedError("fake KMS: unknown blob or wrong encryption context")
        return SecretBuffer(bytearray(entry[0]))


@dataclass
class Made:
    """One bundle made by the test generator, with what the test needs to check it."""

    bundle: Bundle
    raw: bytes
    key_der: bytes
    spki: bytes


@dataclass
class World:
    generator: SimulatedNSM
    main: SimulatedNSM
    verifier: Verifier
    policy: Policy
    root: CA
    intermediate: CA
    kms: FakeKMS

    def make(
        self,
        name: str = "example.test",
        seq: int = 1,
        *,
        names: tuple[str, ...] = ("example.test",),
        key_type: str = "p256",
        created_ms: int | None = None,
        seal_another_key: bool = False,
    ) -> Made:
        """A bound bundle; ``seal_another_key`` models a buggy generator that certifies one key
        and seals another (under the certified key's AAD and context)."""
        key = new_key(key_type)
        public = spki(key)
        plain = pkcs8(new_key(key_type) if seal_another_key else key)
        key_der = bytes(plain)
        bundle_id = new_bundle_id()
        data_key, blob = self.kms.generate(encryption_context(bundle_id, name, public))
        with data_key:
            sealed = seal_key(plain, data_key, bundle_id=bundle_id, name=name, spki_der=public)
        chain = (self.intermediate.leaf(key.public_key(), names), self.intermediate.der)
        dek = WrappedDataKey("alias/test", blob, encryption_context(bundle_id, name, public))
        unbound = build(
            bundle_id=bundle_id,
            seq=seq,
            name=name,
            chain=chain,
            key=sealed,
            dek=dek,
            created_ms=created_ms,
        )
        bound = bind(unbound, self.generator)
        return Made(bound, bound.encode(), key_der, public)


@pytest.fixture
def world(tmp_path: Path) -> World:
    generator_image = make_image(tmp_path / "generator-image", "print('generator')\n")
    main_image = make_image(tmp_path / "main-image", "print('main')\n")
    root = CA.root()
    return World(
        generator=SimulatedNSM(generator_image),
        main=SimulatedNSM(main_image),
        verifier=trusted_verifier(True),
        policy=Policy(accepted_pcrs=(measure_image(generator_image),)),
        root=root,
        intermediate=root.intermediate(),
        kms=FakeKMS(),
    )
