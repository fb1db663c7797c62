"""ASGI mode, one-shot, health and metrics."""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path

import httpx
import pytest

from nitrotls.nsm import SimulatedNSM
from nitrotls.server.errors import ServerConfigError
from nitrotls.server.identity import ContextHolder
from nitrotls.server.metrics import Metrics
from nitrotls.server.runtime import ServeOptions, TLSServer, Upstream
from nitrotls.transport.address import Address

from .conftest import PKI, open_tls, port_of, read_response, running, served_from, upstream_server
from .test_attestation import attest_on, check_document

LISTEN = Address.parse("tcp://127.0.0.1:0")
APP_MODULE = "nitrotls_test_asgi_app"


@pytest.fixture
def asgi_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / f"{APP_MODULE}.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        while True:\n"
        "            message = await receive()\n"
        "            if message['type'] == 'lifespan.startup':\n"
        "                await send({'type': 'lifespan.startup.complete'})\n"
        "            elif message['type'] == 'lifespan.shutdown':\n"
        "                await send({'type': 'lifespan.shutdown.complete'})\n"
        "                return\n"
        "    body = ('app saw ' + scope['path']).encode()\n"
        "    await send({'type': 'http.response.start', 'status': 200,\n"
        "                'headers': [(b'content-length', str(len(body)).encode())]})\n"
        "    await send({'type': 'http.response.body', 'body': body})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(APP_MODULE, None)
    return f"{APP_MODULE}:app"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img"
    path.mkdir()
    (path / "main.py").write_text("main\n")
    return path


def test_asgi_app_served_with_our_context_and_attestation(
    pki: PKI, asgi_app: str, image: Path
) -> None:
    async def scenario() -> None:
        first, second = pki.issue(), pki.issue()
        holder = ContextHolder(served_from(first))
        options = ServeOptions(listen=LISTEN, app=asgi_app)
        async with running(options, holder, SimulatedNSM(image)) as server:
            port = port_of(server)
            async with httpx.AsyncClient(verify=pki.client_context()) as http:
                answer = await http.get(f"https://localhost:{port}/hello")
            assert answer.text == "app saw /hello"
            reader, writer = await open_tls(port, pki.client_context())
            nonce = secrets.token_bytes(32)
            status, headers, body = await attest_on(writer, reader, nonce)
            assert status == 200 and headers["content-type"] == "application/cose"
            check_document(body, image, first.leaf, nonce, b"\x01" * 16)
            writer.close()
            holder.swap(served_from(second, seq=2))  # hot reload reaches uvicorn too
            reader, writer = await open_tls(port, pki.client_context())
            peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert peer == second.leaf
            status, _, body = await attest_on(writer, reader, nonce)
            check_document(body, image, second.leaf, nonce, b"\x01" * 16)
            writer.close()

    asyncio.run(scenario())


def test_asgi_app_that_cannot_load(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        options = ServeOptions(listen=LISTEN, app="no_such_module_here:app")
        with pytest.raises(ServerConfigError, match="cannot load"):
            async with running(options, holder):
                pass

    asyncio.run(scenario())


def test_exactly_one_mode() -> None:
    with pytest.raises(ServerConfigError):
        ServeOptions(listen=LISTEN)
    with pytest.raises(ServerConfigError):
        ServeOptions(listen=LISTEN, upstream=Upstream.parse("http://h:1"), app="m:a")
    with pytest.raises(ServerConfigError):
        Upstream.parse("ftp://h:1")
    with pytest.raises(ServerConfigError):
        Upstream.parse("http://h:1/path")


def test_one_shot_drops_context_after_first_handshake(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()), one_shot=True)
        async with (
            upstream_server() as up,
            running(ServeOptions(listen=LISTEN, upstream=Upstream.parse(up.url)), holder) as server,
        ):
            port = port_of(server)
            reader, writer = await open_tls(port, pki.client_context())
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            status, _, _ = await read_response(reader)
            assert status == 200
            assert holder.current() is None
            with pytest.raises(OSError):
                await open_tls(port, pki.client_context())
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            status, _, _ = await read_response(reader)
            assert status == 200  # the session in progress goes on
            waiting = asyncio.create_task(server.wait())
            await asyncio.sleep(0.05)
            assert not waiting.done()
            writer.close()
            await asyncio.wait_for(waiting, 10)

    asyncio.run(scenario())


def test_health_endpoints_and_metrics(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue(), seq=7))
        metrics = Metrics(bundle_seq=7)
        async with upstream_server() as up:
            options = ServeOptions(
                listen=LISTEN,
                upstream=Upstream.parse(up.url),
                health=Address.parse("tcp://127.0.0.1:0"),
            )
            server = TLSServer(options, holder, None, metrics)
            await server.start()
            try:
                assert server.health_address is not None
                base = f"http://127.0.0.1:{server.health_address.port}"
                reader, writer = await open_tls(port_of(server), pki.client_context())
                writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                status, _, _ = await read_response(reader)  # the connection stays open
                assert status == 200
                async with httpx.AsyncClient() as http:
                    assert (await http.get(base + "/healthz")).status_code == 200
                    assert (await http.get(base + "/readyz")).status_code == 200
                    text = (await http.get(base + "/metrics")).text
                    assert (await http.get(base + "/nope")).status_code == 404
                lines = dict(
                    line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")
                )
                assert lines["nitrotls_handshakes_total"] == "1"
                assert lines["nitrotls_connections_active"] == "1"
                assert lines["nitrotls_requests_total"] == "1"
                assert lines["nitrotls_bundle_seq"] == "7"
                assert float(lines["nitrotls_certificate_expiry_seconds"]) == 0.0  # unset here
                writer.close()
                holder.spend()
                async with httpx.AsyncClient() as http:
                    ready = await http.get(base + "/readyz")
                assert ready.status_code == 503 and "no certificate" in ready.text
            finally:
                await server.shutdown()

    asyncio.run(scenario())
