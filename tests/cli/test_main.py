"""The CLI's frame: help, version, and typed errors as one line."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from nitrotls.cli import cli


def test_help_lists_command_groups() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("attestation", "kms", "bundle", "generator", "host", "serve", "verify", "demo"):
        assert name in result.output


def test_console_script_reports_version() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from nitrotls.cli import main; main()", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0
    assert "nitrotls" in out.stdout
