"""The audit chain: it verifies when untouched, and names the first line that was changed."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from nitrotls.kms.local.audit import AuditEvent, AuditLog, encode_entry, verify_log
from nitrotls.kms.local.errors import AuditError


def event(n: int) -> AuditEvent:
    return AuditEvent(
        caller="arn:aws:iam::111122223333:role/enclave",
        operation="Decrypt",
        key="arn:aws:kms:us-east-1:111122223333:key/k",
        context={"n": str(n)},
        pcrs={0: bytes([n % 256]) * 48},
        decision="allow" if n % 2 else "deny",
        reason=f"entry {n}",
    )


def write_log(path: Path, count: int) -> list[str]:
    log = AuditLog(path)
    for n in range(count):
        log.record(event(n))
    log.close()
    return path.read_text().splitlines()


def rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def test_untouched_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 6)
    report = verify_log(path)
    assert report.ok and report.lines == 6
    first = json.loads(lines[0])
    assert first["prev"] == "0" * 64 and first["seq"] == 1
    assert first["pcrs"] == {"0": "00" * 48} and first["context"] == {"n": "0"}
    assert json.loads(lines[1])["prev"] == first["hash"]


def test_edited_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 6)
    lines[3] = lines[3].replace('"decision":"allow"', '"decision":"deny"')
    rewrite(path, lines)
    report = verify_log(path)
    assert report.broken_line == 4 and report.lines == 3
    assert "edited" in report.problem


def test_edited_and_rehashed_line_breaks_the_next(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 6)
    entry = json.loads(lines[2])
    del entry["hash"]
    entry["reason"] = "nothing to see"
    lines[2] = encode_entry(entry)[0]
    rewrite(path, lines)
    report = verify_log(path)
    assert report.broken_line == 4
    assert "does not chain" in report.problem


@pytest.mark.parametrize(
    ("change", "broken"),
    [
        (lambda lines: lines[:2] + lines[3:], 3),  # a line removed
        (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], 2),  # two lines swapped
        (lambda lines: [*lines[:4], lines[4].replace(",", ", ", 1), lines[5]], 5),  # whitespace
        (lambda lines: [*lines[:5], "not json"], 6),
        (lambda lines: [*lines[:5], "{}"], 6),
    ],
    ids=["removed", "swapped", "reformatted", "garbage", "empty-entry"],
)
def test_structural_changes_are_caught(
    tmp_path: Path, change: Callable[[list[str]], list[str]], broken: int
) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 6)
    rewrite(path, change(lines))
    assert verify_log(path).broken_line == broken


def test_incomplete_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 3)
    path.write_text("\n".join(lines))  # no newline after the last line
    report = verify_log(path)
    assert report.broken_line == 3 and "incomplete" in report.problem
    with pytest.raises(AuditError, match="incomplete line"):
        AuditLog(path)


def test_chain_continues_across_reopen_and_threads(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_log(path, 3)
    log = AuditLog(path)
    threads = [
        threading.Thread(target=lambda: [log.record(event(n)) for n in range(50)]) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    report = verify_log(path)
    assert report.ok and report.lines == 3 + 8 * 50
    assert path.stat().st_mode & 0o777 == 0o600


def test_missing_log_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no audit log"):
        verify_log(tmp_path / "absent.log")
