"""PCR arithmetic, PCR4 against real documents, and simulated image measurement."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nitrotls.nsm import ImageError, instance_pcr, measure_image, measure_signing_cert
from nitrotls.nsm.errors import PCRIndexError, PCRLockedError
from nitrotls.nsm.image import BOOT_SECTION
from nitrotls.nsm.pcr import PCRBank, extend

ZERO = bytes(48)


def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def test_extend_is_sha384_of_old_and_data() -> None:
    once = extend(ZERO, b"abc")
    assert once == sha384(ZERO + b"abc")
    assert extend(once, b"def") == sha384(once + b"def")


def test_pcr4_matches_every_real_document(manifest: list[dict[str, Any]]) -> None:
    checked = 0
    for entry in manifest:
        instance_id = entry["module_id"].split("-enc")[0]
        assert instance_pcr(instance_id).hex() == entry["pcr4"], entry["file"]
        checked += 1
    assert checked >= 5


def test_pcr4_of_the_valid_document_is_the_published_value(
    manifest: list[dict[str, Any]],
) -> None:
    entry = next(e for e in manifest if e["file"] == "docs/valid-attestation-doc-bytes")
    assert entry["module_id"].startswith("i-020b6af9246d90e92-enc")
    assert instance_pcr("i-020b6af9246d90e92").hex().startswith("1f442c86")
    assert instance_pcr("i-020b6af9246d90e92").hex() == entry["pcr4"]


def test_bank_boot_pcrs_locked_application_pcrs_extend_then_lock() -> None:
    bank = PCRBank({0: b"\x01" * 48})
    assert bank.describe(0) == (True, b"\x01" * 48)
    assert bank.describe(16) == (False, ZERO)
    with pytest.raises(PCRLockedError):
        bank.extend(3, b"x")
    value = bank.extend(16, b"x")
    assert value == sha384(ZERO + b"x")
    bank.lock(16)
    assert bank.describe(16) == (True, value)
    with pytest.raises(PCRLockedError):
        bank.extend(16, b"y")
    with pytest.raises(PCRIndexError):
        bank.extend(32, b"x")


def test_file_image_sections_follow_nitro_cli(image_file: Path) -> None:
    content = image_file.read_bytes()
    pcrs = measure_image(image_file)
    assert set(pcrs) == {0, 1, 2}
    # PCR2: the application section alone; PCR1: the boot section; PCR0: both, in order.
    assert pcrs[2] == sha384(ZERO + sha384(content))
    assert pcrs[1] == sha384(ZERO + sha384(BOOT_SECTION))
    assert pcrs[0] == sha384(ZERO + sha384(BOOT_SECTION + content))


def test_measurement_is_deterministic_and_pcr1_constant(
    image_dir: Path, image_file: Path, tmp_path: Path
) -> None:
    first = measure_image(image_dir)
    assert measure_image(image_dir) == first
    copy = tmp_path / "copy"
    shutil.copytree(image_dir, copy, symlinks=True)
    assert measure_image(copy) == first  # location and timestamps are not measured
    assert measure_image(image_file)[1] == first[1]
    assert measure_image(image_file)[2] != first[2]


@pytest.mark.parametrize(
    "change",
    ["content", "mode", "rename", "new_empty_dir", "symlink_target", "new_file"],
)
def test_every_measured_property_changes_pcr0_and_pcr2(image_dir: Path, change: str) -> None:
    before = measure_image(image_dir)
    if change == "content":
        (image_dir / "app" / "lib" / "util.py").write_text("VALUE = 43\n")
    elif change == "mode":
        (image_dir / "app" / "main.py").chmod(0o600)
    elif change == "rename":
        (image_dir / "app" / "main.py").rename(image_dir / "app" / "main2.py")
    elif change == "new_empty_dir":
        (image_dir / "another").mkdir()
    elif change == "symlink_target":
        (image_dir / "current").unlink()
        (image_dir / "current").symlink_to("empty")
    elif change == "new_file":
        (image_dir / "empty" / "f").write_bytes(b"")
    after = measure_image(image_dir)
    assert after[0] != before[0]
    assert after[2] != before[2]
    assert after[1] == before[1]


def test_symlinks_are_measured_not_followed(image_dir: Path) -> None:
    before = measure_image(image_dir)
    # Changing a file outside the tree that a link points at does not change the measurement.
    outside = image_dir.parent / "outside.txt"
    outside.write_text("one")
    (image_dir / "escape").symlink_to(outside)
    with_link = measure_image(image_dir)
    outside.write_text("two")
    assert measure_image(image_dir) == with_link
    assert with_link != before


def test_file_and_directory_holding_it_differ(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"same")
    (tmp_path / "x").write_bytes(b"same")
    assert measure_image(tmp_path / "d")[2] != measure_image(tmp_path / "x")[2]


def test_missing_and_special_images_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="No such file"):
        measure_image(tmp_path / "absent")
    fifo_dir = tmp_path / "withfifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "pipe")
    with pytest.raises(ImageError, match="FIFO"):
        measure_image(fifo_dir)
    with pytest.raises(ImageError, match="neither a regular file nor a directory"):
        measure_image(fifo_dir / "pipe")


def test_pcr8_is_nitro_cli_measurement_of_the_certificate_der(
    tmp_path: Path, signing_cert: x509.Certificate
) -> None:
    cert = signing_cert
    der = cert.public_bytes(serialization.Encoding.DER)
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "c.der").write_bytes(der)
    expected = sha384(ZERO + sha384(der))
    assert measure_signing_cert(tmp_path / "c.pem") == expected
    assert measure_signing_cert(tmp_path / "c.der") == expected
    (tmp_path / "junk").write_bytes(b"not a certificate")
    with pytest.raises(ImageError, match=r"not an X\.509 certificate"):
        measure_signing_cert(tmp_path / "junk")
