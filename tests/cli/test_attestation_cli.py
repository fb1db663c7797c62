"""`nitrotls attestation inspect` and `verify` over the real AWS documents (and a simulated one)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from nitrotls.attestation import (
    CertificateExpiredError,
    DebugEnclaveError,
    DocumentEncodingError,
    DocumentTooOldError,
    NonceMismatchError,
    PCRMismatchError,
    UntrustedRootError,
    parse_document,
    unwrap_document,
)
from nitrotls.cli import cli


def _entry(manifest: list[dict[str, Any]], file: str) -> dict[str, Any]:
    return next(e for e in manifest if e["file"] == file)


@pytest.fixture
def production(vectors_dir: Path, manifest: list[dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    entry = _entry(manifest, "docs/script_attestation.bin")
    return vectors_dir / entry["file"], entry


@pytest.fixture
def debug_doc(vectors_dir: Path, manifest: list[dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    entry = _entry(manifest, "docs/valid-attestation-doc-base64")
    return vectors_dir / entry["file"], entry


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["attestation", *map(str, args)])


def test_inspect_table(production) -> None:
    path, entry = production
    result = run("inspect", path)
    assert result.exit_code == 0, result.output
    assert entry["module_id"] in result.output
    assert entry["pcr0"] in result.output.replace("\n", "").replace("│", "").replace(" ", "")
    assert "chain (root first)" in result.output and "cabundle[3]" in result.output
    assert "inspected only" in result.output


def test_inspect_json_reads_base64(debug_doc) -> None:
    path, entry = debug_doc
    result = run("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["module_id"] == entry["module_id"]
    assert shown["timestamp_ms"] == entry["timestamp_ms"]
    assert shown["debug"] is True
    assert shown["pcrs"]["4"] == entry["pcr4"]
    assert shown["user_data"]["description"].startswith("DER public key (EC secp256r1)")
    assert len(shown["chain"]) == 5


def test_inspect_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(b"\x84\x00")
    result = run("inspect", path)
    assert result.exit_code != 0
    assert isinstance(result.exception, DocumentEncodingError)


def test_verify_as_of_document_time_without_pcrs(production) -> None:
    result = run("verify", production[0], "--at-document-time")
    assert result.exit_code == 0, result.output
    assert "accepted" in result.output
    assert "no measurement was checked" in result.output


def test_verify_now_is_expired(production) -> None:
    result = run("verify", production[0])
    assert result.exit_code != 0
    assert isinstance(result.exception, CertificateExpiredError)


def test_verify_at_an_instant(production) -> None:
    path, entry = production
    at = dt.datetime.fromtimestamp(entry["timestamp_ms"] / 1000, dt.UTC) + dt.timedelta(minutes=1)
    assert run("verify", path, "--at", at.isoformat()).exit_code == 0
    naive = at.replace(tzinfo=None).isoformat()
    assert run("verify", path, "--at", naive).exit_code == 0
    assert run("verify", path, "--at", "2049-01-01T00:00:00Z").exit_code != 0


def test_verify_rejects_conflicting_and_malformed_options(production) -> None:
    path = production[0]
    assert run("verify", path, "--at", "2024-04-10T07:10:00Z", "--at-document-time").exit_code == 2
    assert run("verify", path, "--at", "yesterday").exit_code == 2
    assert run("verify", path, "--nonce", "xyz").exit_code == 2
    assert run("verify", path, "--pcr", "0:abcd").exit_code == 2


def test_verify_debug_refused_unless_allowed(debug_doc) -> None:
    path = debug_doc[0]
    refused = run("verify", path, "--at-document-time")
    assert isinstance(refused.exception, DebugEnclaveError)
    allowed = run("verify", path, "--at-document-time", "--allow-debug")
    assert allowed.exit_code == 0, allowed.output
    assert "debug-mode enclave" in allowed.output


def test_verify_pcr_pins(production) -> None:
    path, entry = production
    ok = run("verify", path, "--at-document-time", "--pcr", f"0:{entry['pcr0']}")
    assert ok.exit_code == 0, ok.output
    assert "matched accepted PCR set 1" in ok.output
    assert "no measurement was checked" not in ok.output
    wrong = run("verify", path, "--at-document-time", "--pcr", f"0:{'00' * 48}")
    assert isinstance(wrong.exception, PCRMismatchError)


def test_verify_pcrs_files_are_alternatives(production, manifest, tmp_path: Path) -> None:
    path, entry = production
    other = next(e for e in manifest if e["pcr0"] != entry["pcr0"] and not e["debug_mode"])
    files = []
    for name, source in (("old", other), ("new", entry)):
        measurements = {"HashAlgorithm": "Sha384 { ... }"}
        measurements.update({f"PCR{i}": source[f"pcr{i}"] for i in (0, 1, 2)})
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps({"Measurements": measurements}))
    result = run(
        "verify",
        path,
        "--at-document-time",
        "--pcrs-file",
        files[0],
        "--pcrs-file",
        files[1],
        "--json",
    )
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.output)
    assert verdict["accepted"] is True
    assert verdict["measurement_checked"] is True
    assert verdict["matched_pcr_set"] == 2
    only_old = run("verify", path, "--at-document-time", "--pcrs-file", files[0])
    assert isinstance(only_old.exception, PCRMismatchError)


def test_verify_nonce(vectors_dir: Path, manifest) -> None:
    entry = _entry(manifest, "docs/valid-attestation-doc-bytes")
    path = vectors_dir / entry["file"]
    nonce = parse_document(path.read_bytes()).document.nonce
    assert nonce
    assert run("verify", path, "--at-document-time", "--nonce", nonce.hex()).exit_code == 0
    wrong = run("verify", path, "--at-document-time", "--nonce", "00" * 16)
    assert isinstance(wrong.exception, NonceMismatchError)


def test_verify_max_age(production) -> None:
    path, entry = production
    at = dt.datetime.fromtimestamp(entry["timestamp_ms"] / 1000, dt.UTC) + dt.timedelta(minutes=10)
    old = run("verify", path, "--at", at.isoformat(), "--max-age", "60")
    assert isinstance(old.exception, DocumentTooOldError)
    assert run("verify", path, "--at", at.isoformat(), "--max-age", "900").exit_code == 0


def test_verify_json_refusal(debug_doc) -> None:
    result = run("verify", debug_doc[0], "--at-document-time", "--json")
    assert result.exit_code != 0
    assert json.loads(result.output) == {
        "accepted": False,
        "reason": "DebugEnclaveError",
        "message": str(result.exception),
    }


def test_console_script_prints_one_line_and_fails(production, tmp_path: Path) -> None:
    path, _ = production
    encoded = tmp_path / "doc.b64"
    encoded.write_bytes(base64.b64encode(path.read_bytes()))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from nitrotls.cli import main; main()",
            "attestation",
            "verify",
            str(encoded),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"COLUMNS": "1000", "PATH": ""},
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "CertificateExpiredError" in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_dev_root_trusted_only_with_dev(tmp_path: Path) -> None:
    try:
        from nitrotls.nsm import SimulatedNSM
    except ImportError:  # nitrotls.nsm is built alongside; the test runs once it exists
        pytest.skip("nitrotls.nsm.SimulatedNSM is not available yet")
    image = tmp_path / "image"
    image.mkdir()
    (image / "app.py").write_text("print('hello')\n")
    document = tmp_path / "doc.cbor"
    document.write_bytes(SimulatedNSM(image).attest(nonce=b"\x05" * 16))
    accepted = run("verify", document, "--dev", "--nonce", "05" * 16)
    assert accepted.exit_code == 0, accepted.output
    refused = run("verify", document)
    assert isinstance(refused.exception, UntrustedRootError)
    debug_document = tmp_path / "debug.cbor"
    debug_document.write_bytes(SimulatedNSM(image, debug=True).attest())
    assert isinstance(run("verify", debug_document, "--dev").exception, DebugEnclaveError)
    assert unwrap_document(document.read_bytes()) == document.read_bytes()
