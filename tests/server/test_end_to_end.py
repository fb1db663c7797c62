"""Acceptance: the generator issues through Pebble; ``nitrotls serve --upstream`` serves it.

curl and ``openssl s_client -verify_return_error`` trust only Pebble's root and get the
upstream's answer; the attestation endpoint's document verifies and binds the served SPKI and the
client's nonce. Then the start-up outage path: KMS unreachable gives the distinct exit code.
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from generator.conftest import (  # noqa: F401 - fixtures used by name
    Challenges,
    Deployment,
    acme_section,
    challenges,
    deployment,
    pebble,
    responder,
)
from nitrotls import binding
from nitrotls.attestation import Policy
from nitrotls.generator import Runner, make_issuer
from nitrotls.nsm import measure_image, trusted_verifier

from pebble_fixtures import PebbleStack, free_port
from system_tools import require_tool

pytestmark = pytest.mark.slow
NAME = "web.nitrotls.test"
ANSWER = b"hello from the upstream app\n"


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def upstream_http() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def serve_argv(world: Deployment, port: int, upstream: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-c", "from nitrotls.cli import main; main()",
        "--enclave", f"simulated:{world.main_image}",
        "serve", "--json",
        "--listen", f"tcp://127.0.0.1:{port}",
        "--upstream", f"http://127.0.0.1:{upstream}",
        "--store", f"dir:{world.store_dir}",
        "--name", NAME,
        "--generator-pcrs", str(world.pcr_file("generator")),
        "--dev",
        "--kms-endpoint", world.kms_endpoint,
        *extra,
    ]  # fmt: skip


@contextmanager
def serving(argv: list[str], env: dict[str, str]) -> Iterator[dict[str, object]]:
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        assert process.stdout is not None
        text = ""
        while not text.rstrip().endswith("}"):
            line = process.stdout.readline()
            if not line:
                raise AssertionError(f"nitrotls serve exited: {process.communicate()[1]}")
            text += line
        yield json.loads(text)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()


def fetch_attestation(port: int, root: Path, nonce: bytes) -> tuple[bytes, bytes]:
    """(served leaf DER, COSE document) from the endpoint, over one verified connection."""
    ctx = ssl.create_default_context(cafile=str(root))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=NAME) as conn,
    ):
        query = base64.urlsafe_b64encode(nonce).rstrip(b"=").decode()
        conn.sendall(
            f"GET /.well-known/nitrotls/attestation?nonce={query} HTTP/1.1\r\n"
            f"Host: {NAME}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        leaf = conn.getpeercert(binary_form=True)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"Content-Type: application/cose" in head
    assert leaf is not None
    return leaf, body


def test_generator_then_serve_then_verify(
    deployment: Deployment,  # noqa: F811
    pebble: PebbleStack,  # noqa: F811
    challenges: Challenges,  # noqa: F811
    tmp_path: Path,
) -> None:
    curl = require_tool("curl")
    openssl = require_tool("openssl")
    store = deployment.store()
    challenges.target = store
    config = deployment.config(domains=(NAME,), ca=acme_section(pebble))
    assert Runner(make_issuer(config, deployment.generator, store=store)).once().issued
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(b"".join(pebble.root_pems()))
    port = free_port()
    with (
        upstream_http() as upstream,
        serving(serve_argv(deployment, port, upstream), deployment.env()) as ready,
    ):
        assert ready["seq"] == 1 and ready["listen"] == f"tcp://127.0.0.1:{port}"
        url = f"https://{NAME}:{port}/"
        fetched = subprocess.run(
            [curl, "-sS", "--fail", "--cacert", str(root), "--resolve",
             f"{NAME}:{port}:127.0.0.1", url],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        assert fetched.stdout == ANSWER
        s_client = subprocess.run(
            [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", NAME,
             "-CAfile", str(root), "-verify_return_error", "-verify_hostname", NAME, "-quiet"],
            input=f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode(),
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert s_client.returncode == 0, s_client.stderr
        assert s_client.stdout.endswith(ANSWER)
        nonce = secrets.token_bytes(32)
        leaf, document = fetch_attestation(port, root, nonce)
        verified = trusted_verifier(True).verify(
            document, Policy(accepted_pcrs=(measure_image(deployment.main_image),), nonce=nonce)
        )
        bound = binding.decode(verified.user_data)
        assert bound.tag == binding.TLS_TAG
        assert bound.spki_sha384 == binding.spki_sha384(leaf)
        latest = store.latest(NAME)
        assert latest is not None and bound.bundle_id.hex() == latest.id


def issue_once(world: Deployment, ca: PebbleStack, answers: Challenges) -> None:
    """The generator issues one bundle through Pebble into the deployment's store."""
    store = world.store()
    answers.target = store
    config = world.config(domains=(NAME,), ca=acme_section(ca))
    assert Runner(make_issuer(config, world.generator, store=store)).once().issued


def serve_once(world: Deployment, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``nitrotls serve`` that is expected to stop at start-up."""
    return subprocess.run(
        argv, capture_output=True, text=True, env=world.env(), timeout=120, check=False
    )


def test_kms_unreachable_at_start_exits_75(
    deployment: Deployment,  # noqa: F811
    pebble: PebbleStack,  # noqa: F811
    challenges: Challenges,  # noqa: F811
) -> None:
    issue_once(deployment, pebble, challenges)
    argv = serve_argv(deployment, free_port(), 9, "--start-attempts", "2")
    dead = f"http://127.0.0.1:{free_port()}"
    argv[argv.index("--kms-endpoint") + 1] = dead
    result = serve_once(deployment, argv)
    assert result.returncode == 75, result.stderr
    assert "StartupUnavailableError" in result.stderr
    assert "Traceback" not in result.stderr


def test_image_outside_the_key_policy_exits_77_without_retrying(
    deployment: Deployment,  # noqa: F811
    pebble: PebbleStack,  # noqa: F811
    challenges: Challenges,  # noqa: F811
    tmp_path: Path,
) -> None:
    issue_once(deployment, pebble, challenges)
    other = tmp_path / "other-image"
    other.mkdir()
    (other / "app.py").write_text("print('an image the key policy does not name')\n")
    argv = serve_argv(deployment, free_port(), 9, "--start-attempts", "6")
    argv[argv.index("--enclave") + 1] = f"simulated:{other}"
    result = serve_once(deployment, argv)
    assert result.returncode == 77, result.stderr
    assert "KeyReleaseRefusedError" in result.stderr
    assert measure_image(other)[0].hex()[:16] in result.stderr  # the PCRs it presented
    assert "retrying" not in result.stderr and "Traceback" not in result.stderr
