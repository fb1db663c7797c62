"""Measurement files: nitro-cli describe-eif / build-enclave JSON and a plain PCR map."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nitrotls.attestation import PCRFileError, PolicyError, load_pcrs_file, parse_pcrs_json

PCR0, PCR1, PCR2 = ("aa" * 48, "bb" * 48, "cc" * 48)
EXPECTED = {0: bytes.fromhex(PCR0), 1: bytes.fromhex(PCR1), 2: bytes.fromhex(PCR2)}


def _write(tmp_path: Path, value: Any) -> Path:
    path = tmp_path / "pcrs.json"
    path.write_text(json.dumps(value) if not isinstance(value, str) else value)
    return path


def test_describe_eif_output(tmp_path: Path) -> None:
    value = {
        "EifVersion": 4,
        "Measurements": {
            "HashAlgorithm": "Sha384 { ... }",
            "PCR0": PCR0,
            "PCR1": PCR1,
            "PCR2": PCR2,
        },
        "IsSigned": False,
        "CheckCRC": True,
        "ImageName": "app",
        "Metadata": {"BuildTime": "2024-01-01"},
    }
    assert load_pcrs_file(_write(tmp_path, value)) == EXPECTED


def test_build_enclave_output_with_pcr8(tmp_path: Path) -> None:
    measurements = {"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0, "PCR1": PCR1, "PCR2": PCR2}
    measurements["PCR8"] = "dd" * 48
    got = load_pcrs_file(_write(tmp_path, {"Measurements": measurements}))
    assert got == {**EXPECTED, 8: bytes.fromhex("dd" * 48)}


def test_plain_map(tmp_path: Path) -> None:
    assert load_pcrs_file(_write(tmp_path, {"PCR0": PCR0, "PCR1": PCR1, "PCR2": PCR2})) == EXPECTED
    assert load_pcrs_file(str(_write(tmp_path, {"HashAlgorithm": "SHA384", "PCR0": PCR0}))) == {
        0: EXPECTED[0]
    }


def test_uppercase_hex_is_accepted() -> None:
    assert parse_pcrs_json(json.dumps({"PCR0": PCR0.upper()})) == {0: EXPECTED[0]}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "expected JSON"),
        ([PCR0], "JSON object"),
        ({}, "at least one PCR"),
        ({"Measurements": {"HashAlgorithm": "Sha384 { ... }"}}, "at least one PCR"),
        ({"Measurements": [PCR0]}, "Measurements"),
        ({"PCR0": PCR0, "PRC1": PCR1}, "PRC1"),
        ({"PCR32": PCR0}, "PCR32"),
        ({"PCR0": "zz" * 48}, "hex"),
        ({"PCR0": 5}, "hex"),
        ({"PCR0": "aa" * 20}, "32, 48 or 64 bytes"),
        ({"HashAlgorithm": "Sha256", "PCR0": PCR0}, "Sha384"),
    ],
)
def test_unusable_files_are_refused(tmp_path: Path, value: Any, message: str) -> None:
    with pytest.raises(PCRFileError, match=message) as caught:
        load_pcrs_file(_write(tmp_path, value))
    assert str(tmp_path) in str(caught.value)
    assert isinstance(caught.value, PolicyError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PCRFileError, match="cannot read"):
        load_pcrs_file(tmp_path / "absent.json")


def test_huge_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_bytes(b" " * (1 << 20) + b"{}")
    with pytest.raises(PCRFileError, match="1 MiB"):
        load_pcrs_file(path)
