"""A simulated main enclave serving TLS with the attestation endpoint, and its policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nitrotls.attestation import Policy, Verifier
from nitrotls.nsm import SimulatedNSM, measure_image, trusted_verifier

from attested_server import RunningServer, attested_server
from certs import PKI, make_pki


def _image(root: Path, name: str) -> Path:
    image = root / name
    image.mkdir()
    (image / "app.py").write_text(f"print('{name}')\n")
    return image


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_pki(tmp_path)


@pytest.fixture
def main_image(tmp_path: Path) -> Path:
    return _image(tmp_path, "main-image")


@pytest.fixture
def other_image(tmp_path: Path) -> Path:
    return _image(tmp_path, "other-image")


@pytest.fixture
def enclave(main_image: Path) -> SimulatedNSM:
    return SimulatedNSM(main_image)


@pytest.fixture
def policy(main_image: Path) -> Policy:
    return Policy(accepted_pcrs=(measure_image(main_image),))


@pytest.fixture
def verifier() -> Verifier:
    return trusted_verifier(True)


@pytest.fixture
def server(pki: PKI, enclave: SimulatedNSM) -> Iterator[RunningServer]:
    def attest(user_data: bytes, nonce: bytes) -> bytes:
        return enclave.attest(user_data=user_data, nonce=nonce)

    with attested_server(pki.cert_file, pki.key_file, pki.leaf.der, attest) as running:
        yield running
