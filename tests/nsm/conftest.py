"""Fixtures for the NSM tests: small simulated images and a controllable clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A small application tree: nested files, an executable, an empty directory, a symlink."""
    root = tmp_path / "image"
    (root / "app" / "lib").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "app" / "main.py").write_text("print('hello from the enclave')\n")
    (root / "app" / "lib" / "util.py").write_text("VALUE = 42\n")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\nexec python3 app/main.py\n")
    run.chmod(0o755)
    (root / "app" / "main.py").chmod(0o644)
    (root / "app" / "lib" / "util.py").chmod(0o644)
    (root / "current").symlink_to("app")
    return root


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "ramdisk.img"
    path.write_bytes(b"simulated application ramdisk\x00\x01\x02" * 100)
    return path


class FakeClock:
    """A clock tests move by hand (aware UTC datetimes)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def signing_cert(tmp_path: Path) -> x509.Certificate:
    """A self-signed P-384 certificate like one used to sign an EIF."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eif signer")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA384())
    )


@pytest.fixture
def signing_cert_pem(tmp_path: Path, signing_cert: x509.Certificate) -> Path:
    path = tmp_path / "signer.pem"
    path.write_bytes(signing_cert.public_bytes(serialization.Encoding.PEM))
    return path
