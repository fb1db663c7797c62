"""`nitrotls attestation measure` and `simulate` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
from click.testing import CliRunner

from nitrotls.attestation import Policy, load_pcrs_file, parse_document
from nitrotls.cli import cli
from nitrotls.nsm import ImageError, measure_image, trusted_verifier


def test_measure_prints_describe_eif_json(image_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["attestation", "measure", "--image", str(image_dir)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    measured = measure_image(image_dir)
    assert printed == {
        "Measurements": {
            "HashAlgorithm": "Sha384 { ... }",
            "PCR0": measured[0].hex(),
            "PCR1": measured[1].hex(),
            "PCR2": measured[2].hex(),
        }
    }
    pcrs_file = tmp_path / "pcrs.json"
    pcrs_file.write_text(result.output)
    assert load_pcrs_file(pcrs_file) == measured


def test_simulate_writes_a_verifiable_document(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "doc.cose"
    key = tmp_path / "key.der"
    key.write_bytes(b"\x30\x03\x02\x01\x01")
    args = [
        "attestation",
        "simulate",
        "--image",
        str(image_dir),
        "--public-key-der",
        str(key),
        "--user-data-hex",
        "c0ffee",
        "--nonce-hex",
        "00" * 16,
        "--instance-id",
        "i-0123456789abcdef0",
        "--out",
        str(out),
        "--json",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    data = out.read_bytes()
    document = trusted_verifier(True).verify(
        data, Policy(accepted_pcrs=(measure_image(image_dir),), nonce=bytes(16))
    )
    assert document.user_data == bytes.fromhex("c0ffee")
    assert document.public_key == key.read_bytes()
    assert document.module_id == summary["module_id"]
    assert document.module_id.startswith("i-0123456789abcdef0-enc")
    assert summary["bytes"] == len(data)
    assert not list(tmp_path.glob("*.tmp"))


def test_simulate_debug_and_bad_inputs(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "debug.cose"
    runner = CliRunner()
    result = runner.invoke(
        cli, ["attestation", "simulate", "--image", str(image_dir), "--debug", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "debug" in result.output
    assert parse_document(out.read_bytes()).document.is_debug
    assert cbor2.loads(out.read_bytes())[0] == bytes.fromhex("a1013822")

    bad_hex = runner.invoke(
        cli,
        ["attestation", "simulate", "--image", str(image_dir), "--nonce-hex", "zz", "--out", "x"],
    )
    assert bad_hex.exit_code != 0 and "hexadecimal" in bad_hex.output
    missing = tmp_path / "missing"
    no_image = runner.invoke(
        cli, ["attestation", "simulate", "--image", str(missing), "--out", str(out)]
    )
    assert no_image.exit_code != 0
    assert isinstance(no_image.exception, ImageError)
