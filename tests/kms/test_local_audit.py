"""The audit chain: it verifies when untouched, and names the first line that was changed."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nitrotls.kms.local.audit import (
    MAX_TEXT,
    MEMO_ENTRIES,
    AuditEvent,
    AuditLog,
    LineEncoder,
    Timestamps,
    encode_entry,
    entry_for,
    verify_log,
)
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

    def record_fifty() -> None:
        for n in range(50):
            log.record(event(n))

    threads = [threading.Thread(target=record_fifty) for _ in range(8)]
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


# -- the hand-built line is byte for byte the reference encoding ------------------------------

STAMP = "2024-02-29T23:59:59.999+00:00"
AWKWARD = ['"', "\\", "\x00", "\x1f", "\n", "\t", "\x7f", "\u2028", "é", "€", "😀", "\ud800", "/"]
POOL = [
    "arn:aws:iam::111122223333:role/enclave",
    "Decrypt",
    "ok",
    "allow",
    'quote " and back\\slash',
    "ü" * (MAX_TEXT + 3),  # cut at MAX_TEXT in caller, op and reason, not in key or decision
    "x" * MAX_TEXT,
    "",
]
texts = st.one_of(
    st.sampled_from(POOL),  # repeats, so that remembered fragments are hit
    st.text(st.characters(exclude_categories=()), max_size=40),  # any code point, surrogates too
    st.text(st.sampled_from(AWKWARD), max_size=20),
    st.text(st.sampled_from([*AWKWARD, "a"]), min_size=MAX_TEXT - 4, max_size=MAX_TEXT + 20),
)
contexts: st.SearchStrategy[dict[str, str] | None] = st.one_of(
    st.none(),
    st.just({}),
    st.sampled_from([{"purpose": "bench"}, {"a": "1", "b": "2"}, {"b": "2", "a": "1"}]),
    st.dictionaries(texts, texts, max_size=6),
)
pcr_maps: st.SearchStrategy[dict[int, bytes] | None] = st.one_of(
    st.none(),
    st.just({}),
    st.sampled_from([{0: b"\x01" * 48, 8: b""}, {8: b"", 0: b"\x01" * 48}]),
    st.dictionaries(st.integers(0, 31), st.binary(max_size=64), max_size=32),
    st.dictionaries(st.integers(-(2**70), 2**70), st.binary(max_size=8), max_size=4),
)
events = st.builds(
    AuditEvent,
    caller=texts,
    operation=texts,
    key=st.none() | texts,
    context=contexts,
    pcrs=pcr_maps,
    decision=st.sampled_from(["allow", "deny", "error"]) | texts,
    reason=texts,
)
SHARED = LineEncoder()  # one for all examples: memo hits, misses and resets all get exercised


def reference(event: AuditEvent, seq: int, stamp: str, prev: str) -> tuple[str, str]:
    return encode_entry(entry_for(event, seq, stamp, prev))


@settings(max_examples=400, deadline=None)
@given(
    event=events,
    seq=st.integers(1, 2**64),
    stamp=st.just(STAMP) | texts,
    prev=st.just("0" * 64) | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64) | texts,
)
def test_fast_line_is_the_reference_line(
    event: AuditEvent, seq: int, stamp: str, prev: str
) -> None:
    fast = SHARED.encode(event, seq, stamp, prev)
    assert fast is not None  # exact types: the hand-built path was taken
    text, digest = reference(event, seq, stamp, prev)
    assert fast == (text, digest)
    assert SHARED.encode_line(event, seq, stamp, prev) == ((text + "\n").encode(), digest)


def varied_event(n: int) -> AuditEvent:
    decision = ("allow", "allow", "deny", "error")[n % 4]
    return AuditEvent(
        caller=f"arn:aws:iam::111122223333:role/r{n % (MEMO_ENTRIES + 9)}",
        operation=("Decrypt", "GenerateDataKey", "Encrypt")[n % 3],
        key=None if n % 7 == 0 else f"arn:aws:kms:us-east-1:111122223333:key/{n % 5}",
        context=None if n % 5 == 0 else {"n": str(n % 11), "z": "\u00ff", "a": '"'},
        pcrs=None if n % 6 == 0 else {i: bytes([n % 3]) * 48 for i in range(n % 17)},
        decision=decision,
        reason="ok" if decision == "allow" else f"refused \\ {n}" + "é" * (n % 600),
    )


def test_fast_line_over_many_entries_and_memo_resets() -> None:
    encoder = LineEncoder()
    prev = "0" * 64
    for n in range(1500):
        event = varied_event(n)
        fast = encoder.encode(event, n + 1, STAMP, prev)
        assert fast == reference(event, n + 1, STAMP, prev), n
        prev = fast[1]


def test_memos_stay_bounded_and_learn_from_allowed_requests_only() -> None:
    encoder = LineEncoder()
    for n in range(5 * MEMO_ENTRIES):
        event = AuditEvent(f"c{n}", "Decrypt", None, {"n": str(n)}, {n: b"x"}, "deny", f"r{n}")
        encoder.encode(event, 1, STAMP, "0" * 64)
    assert not encoder._texts and not encoder._contexts and not encoder._pcrs
    for n in range(5 * MEMO_ENTRIES):
        event = AuditEvent(f"c{n}", "Decrypt", None, {"n": str(n)}, {n: b"x"}, "allow", "ok")
        encoder.encode(event, 1, STAMP, "0" * 64)
    for memo in (encoder._texts, encoder._contexts, encoder._pcrs):
        assert 0 < len(memo) <= MEMO_ENTRIES


class Text(str):
    pass


class Blob(bytes):
    pass


@pytest.mark.parametrize(
    "odd",
    [
        AuditEvent("c", "Decrypt", None, None, {True: b"\x01"}, "allow", "ok"),  # bool, not 1
        AuditEvent(Text("c"), "Decrypt", None, None, None, "allow", "ok"),
        AuditEvent("c", "Decrypt", Text("k"), {Text("n"): "1"}, None, "allow", "ok"),
        AuditEvent("c", "Decrypt", None, None, {1: Blob(b"\x01")}, "allow", "ok"),
        AuditEvent("c", "Decrypt", None, None, {1: bytearray(b"\x01")}, "allow", "ok"),  # type: ignore[dict-item]
    ],
    ids=["bool-index", "str-subclass", "str-subclass-in-context", "bytes-subclass", "bytearray"],
)
def test_values_of_other_types_take_the_reference_path(tmp_path: Path, odd: AuditEvent) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    # Teach the memos the look-alikes first (1 == True, "c" == Text("c"), b"\x01" == Blob(...)).
    log.record(AuditEvent("c", "Decrypt", "k", {"n": "1"}, {1: b"\x01"}, "allow", "ok"))
    assert LineEncoder().encode(odd, 2, STAMP, "0" * 64) is None
    log.record(odd)
    log.close()
    lines = path.read_text().splitlines()
    second = json.loads(lines[1])
    expected = reference(odd, 2, second["time"], json.loads(lines[0])["hash"])[0]
    assert lines[1] == expected
    assert verify_log(path).ok


def test_context_may_be_any_mapping() -> None:
    event = AuditEvent(
        "c", "Decrypt", None, MappingProxyType({"b": "2", "a": "1"}), {}, "allow", ""
    )
    assert LineEncoder().encode(event, 3, STAMP, "0" * 64) == reference(event, 3, STAMP, "0" * 64)


@settings(max_examples=60, deadline=None)
@given(st.lists(events, min_size=1, max_size=12))
def test_written_log_is_the_reference_and_verifies(
    tmp_path_factory: pytest.TempPathFactory, batch: list[AuditEvent]
) -> None:
    path = tmp_path_factory.mktemp("audit") / "audit.log"
    log = AuditLog(path)
    for item in batch:
        log.record(item)
    log.close()
    prev = "0" * 64
    for seq, (item, line) in enumerate(zip(batch, path.read_text().splitlines(), strict=True), 1):
        stamp = json.loads(line)["time"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", stamp)
        text, prev = reference(item, seq, stamp, prev)
        assert line == text
    report = verify_log(path)
    assert report.ok and report.lines == len(batch)


# -- timestamps ---------------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CLOCK = Timestamps()  # shared: the per-second cache is hit and refreshed across examples


def iso(nanoseconds: int) -> str:
    moment = EPOCH + timedelta(microseconds=nanoseconds // 1000)
    return moment.isoformat(timespec="milliseconds")


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 253402300799 * 10**9 + 999_999_999),
    st.lists(st.integers(0, 3 * 10**9), max_size=4),
)
def test_timestamps_match_datetime_isoformat(start: int, steps: list[int]) -> None:
    moment = start
    for step in [0, *steps]:
        moment = min(moment + step, 253402300799 * 10**9 + 999_999_999)
        assert CLOCK.format(moment) == iso(moment)


def test_timestamp_now_is_between_datetime_readings() -> None:
    clock = Timestamps()
    for _ in range(50):
        before = datetime.now(UTC).isoformat(timespec="milliseconds")
        stamp = clock.now()
        after = datetime.now(UTC).isoformat(timespec="milliseconds")
        assert before <= stamp <= after


def test_reference_entry_is_what_record_used_to_build() -> None:
    event = AuditEvent(
        "c" * 600, "o" * 600, "k" * 600, {"n": "1"}, {3: b"\xab", 1: b""}, "d", "r" * 600
    )
    entry: Mapping[str, object] = entry_for(event, 7, STAMP, "p")
    assert entry == {
        "v": 1,
        "seq": 7,
        "time": STAMP,
        "caller": "c" * MAX_TEXT,
        "op": "o" * MAX_TEXT,
        "key": "k" * 600,
        "context": {"n": "1"},
        "pcrs": {"1": "", "3": "ab"},
        "decision": "d",
        "reason": "r" * MAX_TEXT,
        "prev": "p",
    }
