"""DNS hooks run as COMMAND add|remove RECORD VALUE, bounded, with typed failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nitrotls.ca import AcmeChallengeError, command_dns_hook


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "hook.py"
    path.write_text("import sys\n" + body)
    return [sys.executable, str(path)]


def test_hook_receives_action_record_and_value(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    hook = command_dns_hook(
        _script(tmp_path, f"open({str(out)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')")
    )
    hook("add", "_acme-challenge.example.com", "abc-_123")
    hook("remove", "_acme-challenge.example.com", "abc-_123")
    assert out.read_text().splitlines() == [
        "add _acme-challenge.example.com abc-_123",
        "remove _acme-challenge.example.com abc-_123",
    ]


def test_string_command_is_split_without_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    argv = _script(tmp_path, f"open({str(out)!r}, 'w').write(repr(sys.argv[1:]))")
    hook = command_dns_hook(" ".join(argv) + " --flag")
    hook("add", "_acme-challenge.x.test", "v;rm -rf /")
    assert out.read_text() == repr(["--flag", "add", "_acme-challenge.x.test", "v;rm -rf /"])


def test_failing_hook_reports_exit_code_and_stderr(tmp_path: Path) -> None:
    hook = command_dns_hook(_script(tmp_path, "sys.stderr.write('zone not found'); sys.exit(3)"))
    with pytest.raises(AcmeChallengeError, match="exited 3: zone not found"):
        hook("add", "_acme-challenge.x.test", "v")


def test_slow_hook_times_out(tmp_path: Path) -> None:
    hook = command_dns_hook(_script(tmp_path, "import time; time.sleep(30)"), timeout=0.5)
    with pytest.raises(AcmeChallengeError, match="did not finish"):
        hook("add", "_acme-challenge.x.test", "v")


def test_missing_or_empty_command(tmp_path: Path) -> None:
    with pytest.raises(AcmeChallengeError, match="not found"):
        command_dns_hook([str(tmp_path / "nope")])("add", "r", "v")
    with pytest.raises(AcmeChallengeError, match="empty"):
        command_dns_hook("")
