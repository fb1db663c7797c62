"""`nitrotls verify`: exit 0 only for a proven enclave; stored evidence checked offline."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from nitrotls import binding
from nitrotls.cli import cli
from nitrotls.nsm import SimulatedNSM, measure_image

from certs import PKI


def _pcrs_file(image: Path, path: Path) -> Path:
    pcrs = measure_image(image)
    path.write_text(json.dumps({f"PCR{i}": v.hex() for i, v in pcrs.items()}))
    return path


def test_online_accepts_the_right_measurements(
    server, pki: PKI, main_image: Path, tmp_path: Path
) -> None:
    pcrs = _pcrs_file(main_image, tmp_path / "main.json")
    args = ["verify", server.url, "--pcrs-file", str(pcrs), "--cacert", pki.ca_file, "--dev"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["verified"] is True
    assert summary["matched_pcr_set"] == 0
    assert summary["spki_sha384"] == binding.spki_sha384(pki.leaf.der).hex()
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0 and "attested" in table.output


def test_online_refuses_the_wrong_measurements(
    server, pki: PKI, other_image: Path, tmp_path: Path
) -> None:
    pcrs = _pcrs_file(other_image, tmp_path / "other.json")
    args = ["verify", server.url, "--pcrs-file", str(pcrs), "--cacert", pki.ca_file, "--dev"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert "PCR" in str(result.exception) or "PCR" in result.output


def test_a_url_without_measurements_is_refused(server, pki: PKI) -> None:
    result = CliRunner().invoke(cli, ["verify", server.url, "--cacert", pki.ca_file, "--dev"])
    assert result.exit_code != 0


def test_offline_checks_stored_evidence(pki: PKI, main_image: Path, tmp_path: Path) -> None:
    enclave = SimulatedNSM(main_image)
    user_data = binding.for_certificate(pki.leaf.der, b"\x02" * 16).encode()
    doc = tmp_path / "doc.cose"
    doc.write_bytes(enclave.attest(user_data=user_data, nonce=b"n" * 32))
    pcrs = _pcrs_file(main_image, tmp_path / "main.json")
    base = ["verify", "--offline", "--document", str(doc), "--pcrs-file", str(pcrs), "--dev"]
    good = CliRunner().invoke(cli, [*base, "--cert", pki.cert_file, "--json"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)["bundle_id"] == "02" * 16
    other_cert = tmp_path / "ca.pem"
    other_cert.write_bytes(pki.ca.pem)
    bad = CliRunner().invoke(cli, [*base, "--cert", str(other_cert)])
    assert bad.exit_code != 0
