"""The HTTP-01 responder: the one path from the store, 404 elsewhere, clean SIGTERM."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nitrotls.ca import ChallengeServer, start_responder
from nitrotls.ca.responder import parse_listen
from nitrotls.store import DirectoryStore, StoreUnavailableError

TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[DirectoryStore, ChallengeServer]]:
    store = DirectoryStore(tmp_path / "store")
    server, thread = start_responder(store)
    yield store, server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _get(server: ChallengeServer, path: str, method: str = "GET") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_serves_tokens_from_the_store(served: tuple[DirectoryStore, ChallengeServer]) -> None:
    store, server = served
    path = f"/.well-known/acme-challenge/{TOKEN}"
    assert _get(server, path)[0] == 404
    store.put_challenge(TOKEN, f"{TOKEN}.thumb")
    assert _get(server, path) == (200, f"{TOKEN}.thumb".encode())
    assert _get(server, path, "HEAD") == (200, b"")
    store.delete_challenge(TOKEN)
    assert _get(server, path)[0] == 404


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/.well-known/acme-challenge/",
        f"/.well-known/acme-challenge/{TOKEN}/extra",
        "/.well-known/acme-challenge/../../objects/acct",
        "/.well-known/acme-challenge/%2e%2e",
        f"/well-known/acme-challenge/{TOKEN}",
        "/.well-known/acme-challenge/" + "a" * 300,
    ],
)
def test_everything_else_is_404(served: tuple[DirectoryStore, ChallengeServer], path: str) -> None:
    store, server = served
    store.put_challenge(TOKEN, "x")
    store.put_object("acct", b"sealed")
    assert _get(server, path)[0] == 404


def test_other_methods_are_refused(served: tuple[DirectoryStore, ChallengeServer]) -> None:
    _, server = served
    assert _get(server, f"/.well-known/acme-challenge/{TOKEN}", "POST")[0] == 501


def test_store_failure_is_503_and_the_server_survives(tmp_path: Path) -> None:
    class Broken:
        def get_challenge(self, token: str) -> str | None:
            raise StoreUnavailableError("S3 down")

    server, thread = start_responder(Broken())
    try:
        assert _get(server, f"/.well-known/acme-challenge/{TOKEN}")[0] == 503
        assert _get(server, f"/.well-known/acme-challenge/{TOKEN}")[0] == 503
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_garbage_and_silent_clients_do_not_wedge_it(
    served: tuple[DirectoryStore, ChallengeServer],
) -> None:
    store, server = served
    store.put_challenge(TOKEN, "ok")
    idle = socket.create_connection(server.server_address[:2])
    junk = socket.create_connection(server.server_address[:2])
    junk.sendall(b"\x16\x03\x01\x00\x00garbage\r\n\r\n")
    try:
        assert _get(server, f"/.well-known/acme-challenge/{TOKEN}") == (200, b"ok")
    finally:
        idle.close()
        junk.close()


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_listen(":8080") == ("0.0.0.0", 8080)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("80", "host:", "host:http", "h:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


CLI = (
    "import click\n"
    "from nitrotls.cli.host_acme import register\n"
    "from nitrotls.cli.output import run_guarded\n"
    "import sys\n"
    "group = click.Group('host')\n"
    "register(group)\n"
    "sys.exit(run_guarded(group))\n"
)


def _start_cli(store: Path) -> tuple[subprocess.Popen[str], int]:
    """``acme-responder`` on an ephemeral port: the process and the port it printed."""
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, "acme-responder", "--store", f"dir:{store}",
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not match:
        process.kill()
        process.wait(timeout=5)
    assert match, line
    return process, int(match.group(1))


def test_cli_serves_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    store.put_challenge(TOKEN, "from-the-store")
    process, port = _start_cli(tmp_path / "store")
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", f"/.well-known/acme-challenge/{TOKEN}")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"from-the-store")
        connection.close()
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert "stopped" in out
        assert "Traceback" not in err
        assert time.monotonic() - started < 10
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_cli_reports_a_busy_port_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", CLI, "acme-responder", "--store", f"dir:{tmp_path}",
             "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode != 0
    assert "cannot listen" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_never_creates_the_store(tmp_path: Path) -> None:
    """The responder only reads: a store the generator has not made yet is an outage (503),
    and the responder does not create it."""
    process, port = _start_cli(tmp_path / "later" / "store")
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", f"/.well-known/acme-challenge/{TOKEN}")
        assert connection.getresponse().status == 503
        connection.close()
        assert not (tmp_path / "later").exists()
        os.kill(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=10)
        assert process.returncode == 0 and "Traceback" not in err, err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
