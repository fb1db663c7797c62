"""`nitrotls demo` end to end, as a user runs it: a subprocess, real children, real ports.

Each test checks the promises of issue 7 §4: it exits 0 once the attested connection verified,
a second run on the same data directory reuses the state, endpoint.json says where to look, a
failing stage is named and stops the demo, and no child process survives in any case.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nitrotls.bundle import decode
from nitrotls.store import open_store

from system_tools import require_tool

pytestmark = pytest.mark.slow

NITROTLS = str(Path(sys.executable).parent / "nitrotls")
RUN_TIMEOUT = 100.0
ENDPOINT_FIELDS = {"url", "ca_cert", "main_pcrs", "generator_pcrs", "store", "bundle_name"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def demo_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NITROTLS_", "AWS_"))}
    env["NITROTLS_HOME"] = str(home)
    env["COLUMNS"] = "200"
    return env


def run_demo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NITROTLS, "demo", *args],
        env=demo_env(home),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def survivors(home: Path) -> list[str]:
    """Live processes (other than this one) whose environment names this data directory."""
    needles = {f"NITROTLS_HOME={home}".encode(), f"NITROTLS_HOME={home.resolve()}".encode()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if environ & needles and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


def recorded_children_alive(home: Path) -> list[int]:
    """PIDs from demo/children.json that still exist (and are not zombies)."""
    entries = json.loads((home / "demo" / "children.json").read_text())
    alive = []
    for entry in entries:
        stat = Path(f"/proc/{entry['pid']}/stat")
        try:
            state = stat.read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(entry["pid"])
    return alive


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def latest_seq(endpoint: dict[str, str]) -> int:
    with open_store(endpoint["store"]) as store:
        latest = store.latest(endpoint["bundle_name"])
    assert latest is not None
    return decode(latest.data).seq


def test_demo_runs_twice_and_leaves_nothing_behind(nitrotls_home: Path) -> None:
    port = free_port()
    first = run_demo(nitrotls_home, "--exit-after-verify", "--port", str(port))
    assert first.returncode == 0, output(first)
    assert "verified" in first.stdout
    assert "issued bundle 'demo' seq 1" in first.stdout, output(first)
    assert survivors(nitrotls_home) == []
    assert recorded_children_alive(nitrotls_home) == []

    endpoint = json.loads((nitrotls_home / "demo" / "endpoint.json").read_text())
    assert set(endpoint) == ENDPOINT_FIELDS
    assert endpoint["url"] == f"https://localhost:{port}"
    for field in ("ca_cert", "main_pcrs", "generator_pcrs"):
        assert Path(endpoint[field]).is_file(), field
    main_pcrs = json.loads(Path(endpoint["main_pcrs"]).read_text())
    generator_pcrs = json.loads(Path(endpoint["generator_pcrs"]).read_text())
    assert main_pcrs["PCR0"] != generator_pcrs["PCR0"]
    assert main_pcrs["PCR0"] in first.stdout  # the summary shows the proven measurements
    assert latest_seq(endpoint) == 1
    key_id = json.loads((nitrotls_home / "demo" / "state.json").read_text())["kms_key_id"]

    second = run_demo(nitrotls_home, "--exit-after-verify", "--port", str(port))
    assert second.returncode == 0, output(second)
    assert "verified" in second.stdout
    assert "reused bundle 'demo' seq 1" in second.stdout, output(second)
    assert "previous run" in second.stdout
    assert latest_seq(endpoint) == 1  # not due: the generator renewed nothing
    state = json.loads((nitrotls_home / "demo" / "state.json").read_text())
    assert state["kms_key_id"] == key_id
    assert [run["issued"] for run in state["runs"]] == [True, False]
    assert survivors(nitrotls_home) == []
    assert recorded_children_alive(nitrotls_home) == []


def test_demo_serves_until_interrupted(nitrotls_home: Path) -> None:
    """Without --exit-after-verify it serves (here with the local dev CA); the printed curl and
    verify commands work against it; SIGINT stops everything and exits 0."""
    curl = require_tool("curl")
    port = free_port()
    endpoint_file = nitrotls_home / "demo" / "endpoint.json"
    process = subprocess.Popen(
        [NITROTLS, "demo", "--port", str(port), "--ca", "local"],
        env=demo_env(nitrotls_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not endpoint_file.exists():
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "endpoint.json never appeared"
            time.sleep(0.1)
        endpoint = json.loads(endpoint_file.read_text())
        fetched = subprocess.run(
            [curl, "-sS", "--cacert", endpoint["ca_cert"], endpoint["url"] + "/curl"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        assert fetched.stdout.startswith("hello from inside the enclave\n")
        assert "path: /curl" in fetched.stdout
        verify = subprocess.run(
            [NITROTLS, "verify", endpoint["url"], "--pcrs-file", endpoint["main_pcrs"],
             "--cacert", endpoint["ca_cert"], "--dev", "--json"],
            env=demo_env(nitrotls_home), capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout + verify.stderr
        verdict = json.loads(verify.stdout)
        assert verdict["verified"] is True
        assert verdict["pcrs"]["0"] == json.loads(Path(endpoint["main_pcrs"]).read_text())["PCR0"]
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, out
    assert "the local dev CA" in out
    assert "stopped the" in out
    assert survivors(nitrotls_home) == []
    assert recorded_children_alive(nitrotls_home) == []


def test_failed_stage_is_named_and_stops_everything(nitrotls_home: Path) -> None:
    """The public port is taken: the inbound proxy stage fails after KMS and the CA started."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = run_demo(nitrotls_home, "--exit-after-verify", "--port", str(port))
    assert result.returncode != 0, output(result)
    text = result.stdout + result.stderr
    assert "host inbound proxy" in text
    assert "stage 'host inbound proxy' failed" in result.stderr
    assert "address already in use" in text.lower()  # the child's own reason, from its log
    assert "✓ local KMS" in result.stdout  # earlier stages had started processes…
    assert survivors(nitrotls_home) == []  # …and none of them survived
    assert recorded_children_alive(nitrotls_home) == []
    assert not (nitrotls_home / "demo" / "endpoint.json").exists()


def test_a_signal_during_start_stops_everything(nitrotls_home: Path) -> None:
    """SIGTERM while processes are still starting: exit 130, and nothing survives."""
    children = nitrotls_home / "demo" / "children.json"
    process = subprocess.Popen(
        [NITROTLS, "demo", "--exit-after-verify", "--port", str(free_port())],
        env=demo_env(nitrotls_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the demo never started its children"
            try:
                if len(json.loads(children.read_text())) >= 3:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, out
    assert "SIGTERM" in out
    assert survivors(nitrotls_home) == []
    assert recorded_children_alive(nitrotls_home) == []
