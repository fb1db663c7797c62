"""`nitrotls kms serve` as a real process (announces itself, serves boto3, stops cleanly on
SIGTERM and SIGINT) and `nitrotls kms audit verify` on the default log."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from nitrotls.cli import cli
from nitrotls.kms.local import DEV_ACCESS_KEY, DEV_SECRET, running_server

LAUNCH = "from nitrotls.cli import main; main()"


def start(home: Path, *args: str) -> tuple[subprocess.Popen[str], str, str]:
    """Launch the server; return it, its URL and its announcement (read up to the last line)."""
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--home", str(home), "kms", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    banner = ""
    while "stop with" not in banner:
        line = process.stdout.readline()
        if not line:
            process.kill()
            _, err = process.communicate(timeout=10)
            raise AssertionError(f"no announcement: {banner!r} {err!r}")
        banner += line
    found = re.search(r"listening on (http://\S+)", banner)
    assert found is not None, banner
    return process, found[1], banner


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_announces_serves_and_stops(nitrotls_home: Path, stop_signal: int) -> None:
    process, url, banner = start(nitrotls_home, "--listen", "127.0.0.1:0", "--trust-dev-root")
    try:
        kms = boto3.client(
            "kms",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=DEV_ACCESS_KEY,
            aws_secret_access_key=DEV_SECRET,
        )
        assert kms.create_key()["KeyMetadata"]["KeyState"] == "Enabled"
    finally:
        process.send_signal(stop_signal)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    err = " ".join(err.split())  # rich wraps long lines
    assert "development credential" in err and DEV_SECRET in err
    assert "dev root" in banner
    assert "Traceback" not in err
    assert (nitrotls_home / "kms" / "keys.sqlite3").is_file()


def test_serve_reports_bad_settings_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "kms.toml"
    config.write_text("listen = 42\n")
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH, "kms", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    stderr = " ".join(result.stderr.split())  # rich wraps long lines
    assert "listen must be a str" in stderr and "Traceback" not in stderr


def test_audit_verify_defaults_to_the_home_log(nitrotls_home: Path) -> None:
    with running_server() as url:
        kms = boto3.client(
            "kms",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=DEV_ACCESS_KEY,
            aws_secret_access_key=DEV_SECRET,
        )
        kms.create_key()
        kms.list_keys()
    runner = CliRunner()
    result = runner.invoke(cli, ["kms", "audit", "verify", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["lines_verified"] == 2
    assert report["path"] == str(nitrotls_home / "kms" / "audit.log")
    missing = runner.invoke(cli, ["kms", "audit", "verify", str(nitrotls_home / "nope.log")])
    assert missing.exit_code != 0
