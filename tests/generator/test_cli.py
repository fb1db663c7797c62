"""`nitrotls generator run` and `nitrotls bundle inspect|verify` as a person would run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from generator.conftest import ALIAS, Deployment
from nitrotls.ca import LocalCA

NAME = "web.nitrotls.test"
STEPS = ["key", "seal", "csr", "cert", "bind", "publish"]


def run_args(deployment: Deployment, *extra: str) -> list[str]:
    return [
        "--enclave",
        f"simulated:{deployment.generator_image}",
        "generator",
        "run",
        "--once",
        "--domain",
        NAME,
        "--kms-endpoint",
        deployment.kms_endpoint,
        "--kms-key-id",
        ALIAS,
        "--store",
        f"dir:{deployment.store_dir}",
        *extra,
    ]


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_generator_run_logs_one_json_line_per_step_then_bundle_verify(
    deployment: Deployment,
) -> None:
    main_pcrs = deployment.pcr_file("main")
    run = deployment.cli(*run_args(deployment, "--log-json", "--main-pcrs", str(main_pcrs)))
    assert run.returncode == 0, run.stderr
    records = json_lines(run.stderr)
    assert len(records) == len(run.stderr.splitlines())  # every line is JSON
    steps = [r["step"] for r in records]
    assert steps[0] == "attest" and "policy" in steps
    issued = [s for s in steps if s in STEPS]
    assert issued == STEPS  # once each, in order
    outcome = json.loads(run.stdout)
    assert outcome["issued"] is True and outcome["seq"] == 1

    generator_pcrs = str(deployment.pcr_file("generator"))
    root = deployment.workdir / "root.pem"
    root.write_bytes(LocalCA().root_certificate.public_bytes(Encoding.PEM))
    store = f"dir:{deployment.store_dir}"
    base = ["bundle", "verify", "--store", store, "--name", NAME]
    ok = deployment.cli(*base, "--generator-pcrs", generator_pcrs, "--dev", "--ca-cert", str(root))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout and "seq 1" in ok.stdout
    # Without --dev the simulated generator's dev root is not trusted.
    untrusted = deployment.cli(*base, "--generator-pcrs", generator_pcrs)
    assert untrusted.returncode != 0
    assert "UntrustedRoot" in untrusted.stderr and "Traceback" not in untrusted.stderr
    # The main enclave's PCRs are not a generator's.
    wrong = deployment.cli(*base, "--generator-pcrs", str(main_pcrs), "--dev")
    assert wrong.returncode != 0 and "PCRMismatch" in wrong.stderr
    stale = deployment.cli(*base, "--generator-pcrs", generator_pcrs, "--dev", "--min-seq", "2")
    assert stale.returncode != 0 and "StaleBundleError" in stale.stderr

    inspect = deployment.cli("bundle", "inspect", "--store", store, "--json")
    assert inspect.returncode == 0, inspect.stderr
    (row,) = json.loads(inspect.stdout)
    assert row["name"] == NAME and row["seq"] == 1 and row["binding_ok"] is True
    assert row["domains"] == [NAME] and row["key_type"] == "p256"
    assert row["generator"]["pcrs"]["PCR0"] == json.loads(Path(generator_pcrs).read_text())["PCR0"]
    assert row["kms_key_id"].startswith("arn:aws:kms:")
    table = deployment.cli("bundle", "inspect", "--store", store)
    assert table.returncode == 0 and NAME in table.stdout


def test_generator_run_explains_missing_settings(deployment: Deployment) -> None:
    result = deployment.cli(
        "--enclave",
        f"simulated:{deployment.generator_image}",
        "generator",
        "run",
        "--once",
        "--kms-key-id",
        ALIAS,
    )
    assert result.returncode == 2
    assert "--domain" in result.stderr and "Traceback" not in result.stderr


def test_enclave_option_refuses_a_bad_spec(deployment: Deployment) -> None:
    result = deployment.cli("--enclave", "emulated", "generator", "run", "--once")
    assert result.returncode != 0
    assert "simulated:IMAGE" in result.stderr and "Traceback" not in result.stderr


def test_bundle_verify_of_a_missing_name_fails_cleanly(deployment: Deployment) -> None:
    deployment.store().close()  # the store exists (a writer made it), the name does not
    pcrs = str(deployment.pcr_file("generator"))
    result = deployment.cli(
        "bundle", "verify", "--store", f"dir:{deployment.store_dir}", "--name", "nothing",
        "--generator-pcrs", pcrs, "--dev",
    )  # fmt: skip
    assert result.returncode != 0 and "no bundle named" in result.stderr


def test_inspect_reports_a_garbled_bundle(deployment: Deployment) -> None:
    store = deployment.store()
    store.put("junk", "0" * 32, b"\xa0not a bundle", expected_previous=None)
    result = deployment.cli("bundle", "inspect", "--store", f"dir:{deployment.store_dir}", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["name"] == "junk" and "version" in row["problem"]


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_bundle_readers_never_create_the_store(
    deployment: Deployment, tmp_path: Path, command: str
) -> None:
    """`bundle inspect|verify` only read: a mistyped store path is reported, not created."""
    missing = tmp_path / "no" / "store"
    extra = ["--name", "x", "--generator-pcrs", str(deployment.pcr_file("generator"))]
    result = deployment.cli(
        "bundle", command, "--store", f"dir:{missing}", *(extra if command == "verify" else [])
    )
    said = " ".join(result.stderr.split())  # rich wraps the line
    assert result.returncode != 0 and f"{missing} does not exist" in said, said
    assert "Traceback" not in said
    assert not (tmp_path / "no").exists()
