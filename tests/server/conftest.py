"""Fixtures for the server tests: a throwaway CA, served contexts, an h11 upstream, runners."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nitrotls.server.identity import ContextHolder, Served, ServedIdentity
from nitrotls.server.listener import ListenSettings
from nitrotls.server.proxy import ProxySettings
from nitrotls.server.runtime import ServeOptions, TLSServer
from nitrotls.server.runtime import Upstream as UpstreamTarget
from nitrotls.server.tls import context_from_memory
from nitrotls.transport.address import Address

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    chain: list[bytes]
    key: bytearray  # PKCS#8 DER

    @property
    def leaf(self) -> bytes:
        return self.chain[0]


class PKI:
    """A root CA that issues leaves for 'localhost' and 127.0.0.1."""

    def __init__(self, tmp: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nitrotls test root")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.root_pem = tmp / "root.pem"
        self.root_pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        names: tuple[str, ...] = ("localhost",),
        *,
        key_type: str = "p256",
        days: int = 20,
    ) -> Issued:
        key: Any = (
            rsa.generate_private_key(65537, 2048)
            if key_type == "rsa2048"
            else ec.generate_private_key(ec.SECP384R1() if key_type == "p384" else ec.SECP256R1())
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans.append(x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(hours=1))
            .not_valid_after(NOW + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        der = bytearray(
            key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Issued([cert.public_bytes(serialization.Encoding.DER)], der)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.root_pem))
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A simulated enclave image (its files are what the simulated NSM measures)."""
    path = tmp_path / "img"
    path.mkdir()
    (path / "app.py").write_text("x\n")
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


def served_from(
    issued: Issued,
    *,
    alpn: tuple[str, ...] = ("http/1.1",),
    seq: int = 1,
    bundle_id: bytes = b"\x01" * 16,
    insecure: bool = False,
) -> Served:
    key = bytearray(issued.key)
    context = context_from_memory(issued.chain, key, alpn=alpn)
    identity = ServedIdentity.for_chain(
        issued.chain, bundle_id=bundle_id, seq=seq, name="localhost", insecure=insecure
    )
    return Served(context, identity)


# -- an upstream HTTP server built on h11 (an independent parser checks what we forward) --------

Handler = Callable[["Exchange"], Awaitable[None]]


@dataclass
class Exchange:
    """One request seen by the test upstream, and the means to answer it."""

    request: h11.Request
    body: bytes
    conn: h11.Connection
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader | None = None

    @property
    def path(self) -> str:
        return self.request.target.decode()

    def header(self, name: str) -> str | None:
        for key, value in self.request.headers:
            if key.decode() == name.lower():
                return value.decode()
        return None

    async def reply(
        self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None
    ) -> None:
        hdrs = headers if headers is not None else [("Content-Length", str(len(body)))]
        self.writer.write(self.conn.send(h11.Response(status_code=status, headers=hdrs)))
        if body:
            self.writer.write(self.conn.send(h11.Data(data=body)))
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        await self.writer.drain()

    async def reply_chunked(self, status: int, pieces: list[bytes], delay: float = 0.0) -> None:
        headers = [("Transfer-Encoding", "chunked")]
        self.writer.write(self.conn.send(h11.Response(status_code=status, headers=headers)))
        await self.writer.drain()
        for piece in pieces:
            self.writer.write(self.conn.send(h11.Data(data=piece)))
            await self.writer.drain()
            if delay:
                await asyncio.sleep(delay)
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        await self.writer.drain()


async def echo(exchange: Exchange) -> None:
    """Answer with what arrived, as JSON."""
    info = {
        "method": exchange.request.method.decode(),
        "target": exchange.path,
        "headers": [[k.decode(), v.decode()] for k, v in exchange.request.headers],
        "body": exchange.body.decode("latin-1"),
    }
    await exchange.reply(
        200,
        json.dumps(info).encode(),
        [("Content-Type", "application/json"), ("Content-Length", str(len(json.dumps(info))))],
    )


@dataclass
class Upstream:
    handler: Handler
    server: asyncio.Server | None = None
    connections: int = 0
    requests: int = 0
    active: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.active):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.active.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await _read_request(conn, reader, writer)
                if request is None:
                    return
                self.requests += 1
                await self.handler(Exchange(request, body, conn, writer, reader))
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            return
        finally:
            self.active.discard(writer)
            writer.close()


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            data = await reader.read(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, body
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""


@contextlib.asynccontextmanager
async def upstream_server(handler: Handler = echo) -> AsyncIterator[Upstream]:
    up = await Upstream(handler).start()
    try:
        yield up
    finally:
        await up.close()


@contextlib.asynccontextmanager
async def running(
    options: ServeOptions, holder: ContextHolder, source: Any = None
) -> AsyncIterator[TLSServer]:
    server = TLSServer(options, holder, source)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


def proxy_options(upstream_url: str, **overrides: Any) -> ServeOptions:
    """Proxy-mode options on an ephemeral 127.0.0.1 port, with a fast sweeper tick."""
    return ServeOptions(
        listen=Address.parse("tcp://127.0.0.1:0"),
        upstream=UpstreamTarget.parse(upstream_url),
        proxy=overrides.pop("proxy", ProxySettings()),
        listener=overrides.pop("listener", ListenSettings(tick=0.05)),
        **overrides,
    )


def port_of(server: TLSServer) -> int:
    assert server.address is not None
    return server.address.port


async def open_tls(
    port: int, ctx: ssl.SSLContext, host: str = "localhost"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)


async def read_response(
    reader: asyncio.StreamReader, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Read exactly one response (status, lower-cased headers, body); the rest stays buffered."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode()] = value.strip().decode()
        if status < 200 or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    return status, headers, body
                body += await reader.readexactly(size)
                assert await reader.readexactly(2) == b"\r\n"
        if "content-length" in headers:
            return status, headers, await reader.readexactly(int(headers["content-length"]))
        return status, headers, await reader.read()
