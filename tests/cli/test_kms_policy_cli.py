"""`nitrotls kms policy`: PCR files in, key-policy JSON out; unsafe inputs become one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from nitrotls.cli import cli
from nitrotls.kms.errors import KMSPolicyDocumentError

ROLE = "arn:aws:iam::123456789012:role/nitrotls-enclave"
ADMIN = "arn:aws:iam::123456789012:role/KeyAdmin"


def hexes(seed: int) -> dict[str, str]:
    return {f"PCR{index}": bytes([seed + index]).hex() * 48 for index in (0, 1, 2)}


def nitro_cli_file(path: Path, seed: int, pcr8: str | None = None) -> Path:
    measurements = {"HashAlgorithm": "Sha384 { ... }", **hexes(seed)}
    if pcr8 is not None:
        measurements["PCR8"] = pcr8
    path.write_text(json.dumps({"EnclaveName": "x", "Measurements": measurements}))
    return path


def plain_file(path: Path, seed: int) -> Path:
    path.write_text(json.dumps({k: v.upper() for k, v in hexes(seed).items()}))
    return path


def conditions(policy: dict[str, object], prefix: str) -> list[dict[str, str]]:
    statements = policy["Statement"]
    assert isinstance(statements, list)
    return [
        s["Condition"]["StringEqualsIgnoreCase"] for s in statements if s["Sid"].startswith(prefix)
    ]


def test_prints_the_policy(tmp_path: Path) -> None:
    generator = nitro_cli_file(tmp_path / "gen.json", 1, pcr8="88" * 48)
    main_old = plain_file(tmp_path / "main-v1.json", 100)
    main_new = nitro_cli_file(tmp_path / "main-v2.json", 150)
    args = ["kms", "policy", "--generator-pcrs", str(generator)]
    args += ["--main-pcrs", str(main_old), "--main-pcrs", str(main_new)]
    args += ["--admin", ADMIN, "--enclave-role", ROLE]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    policy = json.loads(result.output)
    assert policy["Version"] == "2012-10-17"
    (gen,) = conditions(policy, "GeneratorGenerateDataKey")
    assert gen["kms:RecipientAttestation:PCR0"] == hexes(1)["PCR0"]
    assert gen["kms:RecipientAttestation:PCR8"] == "88" * 48
    mains = conditions(policy, "MainEnclaveDecrypt")
    assert [m["kms:RecipientAttestation:PCR2"] for m in mains] == [
        hexes(100)["PCR2"],
        hexes(150)["PCR2"],
    ]
    assert "kms:RecipientAttestation:PCR8" not in mains[0]


def test_no_pcr8_flag(tmp_path: Path) -> None:
    generator = nitro_cli_file(tmp_path / "gen.json", 1, pcr8="88" * 48)
    main = plain_file(tmp_path / "main.json", 100)
    args = ["kms", "policy", "--generator-pcrs", str(generator), "--main-pcrs", str(main)]
    args += ["--admin", ADMIN, "--enclave-role", ROLE, "--no-pcr8"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (gen,) = conditions(json.loads(result.output), "GeneratorGenerateDataKey")
    assert "kms:RecipientAttestation:PCR8" not in gen


def test_unsafe_input_is_a_typed_error(tmp_path: Path) -> None:
    generator = plain_file(tmp_path / "gen.json", 1)
    args = ["kms", "policy", "--generator-pcrs", str(generator), "--main-pcrs", str(generator)]
    args += ["--admin", "arn:aws:iam::123456789012:root", "--enclave-role", ROLE]
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, KMSPolicyDocumentError)


def test_missing_options_are_usage_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["kms", "policy", "--admin", ADMIN])
    assert result.exit_code == 2
    assert "--generator-pcrs" in result.output


def test_bad_pcr_file_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"PCR0": "not hex"}')
    command = [sys.executable, "-c", "from nitrotls.cli import main; main()", "kms", "policy"]
    command += ["--generator-pcrs", str(broken), "--main-pcrs", str(broken)]
    command += ["--admin", ADMIN, "--enclave-role", ROLE]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2  # a file given on the command line: a configuration error
    assert out.stdout == ""
    assert "broken.json" in out.stderr
    assert "Traceback" not in out.stderr


def test_accepts_attestation_measure_output(tmp_path: Path) -> None:
    runner = CliRunner()
    files = []
    for name in ("generator", "main"):
        image = tmp_path / f"{name}.img"
        image.write_bytes(f"{name} image".encode())
        measured = runner.invoke(cli, ["attestation", "measure", "--image", str(image)])
        assert measured.exit_code == 0, measured.output
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(measured.output)
    args = ["kms", "policy", "--generator-pcrs", str(files[0]), "--main-pcrs", str(files[1])]
    result = runner.invoke(cli, [*args, "--admin", ADMIN, "--enclave-role", ROLE])
    assert result.exit_code == 0, result.output
    (main,) = conditions(json.loads(result.output), "MainEnclaveDecrypt")
    expected = json.loads(files[1].read_text())["Measurements"]["PCR0"].lower()
    assert main["kms:RecipientAttestation:PCR0"] == expected
