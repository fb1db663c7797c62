"""A small TLS server that answers the nitrotls attestation endpoint, for client tests.

It plays a main enclave: a SimulatedNSM signs documents binding the served leaf's SPKI and the
client's nonce. It records, per connection, the request targets in the order they arrived, so a
test can prove that no application request came before the attestation request. ``relay`` builds
a TLS-terminating man in the middle with its own certificate for the same name.
"""

from __future__ import annotations

import asyncio
import base64
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import h11

from nitrotls import binding

ATTEST_PATH = "/.well-known/nitrotls/attestation"
Attest = Callable[[bytes, bytes], bytes]  # (user_data, nonce) -> document


@dataclass
class ServerLog:
    connections: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_connection(self) -> list[str]:
        with self.lock:
            targets: list[str] = []
            self.connections.append(targets)
            return targets


def _respond(
    conn: h11.Connection, sock: ssl.SSLSocket, status: int, ctype: str, body: bytes
) -> None:
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
    sock.sendall(conn.send(h11.Response(status_code=status, headers=headers)))
    sock.sendall(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))


def _serve_connection(
    sock: ssl.SSLSocket, user_data: bytes, attest: Attest, log: ServerLog
) -> None:
    conn = h11.Connection(h11.SERVER)
    targets = log.new_connection()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            conn.receive_data(data)
            if not data:
                return
            continue
        if isinstance(event, h11.Request):
            target = event.target.decode()
            targets.append(target)
            parts = urlsplit(target)
            if parts.path == ATTEST_PATH:
                raw = parse_qs(parts.query).get("nonce", [""])[0]
                nonce = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
                _respond(conn, sock, 200, "application/cose", attest(user_data, nonce))
            else:
                _respond(conn, sock, 200, "text/plain", b"hello from the enclave")
        elif isinstance(event, h11.EndOfMessage):
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            return


class _TLSServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class RunningServer:
    port: int
    log: ServerLog

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


@contextmanager
def attested_server(
    cert_pem_path: str,
    key_pem_path: str,
    leaf_der: bytes,
    attest: Attest,
    *,
    bundle_id: bytes = b"\x01" * 16,
    insecure: bool = False,
) -> Iterator[RunningServer]:
    """Serve TLS on 127.0.0.1 with an attestation endpoint bound to ``leaf_der``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_pem_path, key_pem_path)
    user_data = binding.for_certificate(leaf_der, bundle_id, insecure=insecure).encode()
    log = ServerLog()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                with context.wrap_socket(self.request, server_side=True) as tls:
                    _serve_connection(tls, user_data, attest, log)
            except (OSError, ssl.SSLError, h11.RemoteProtocolError):
                pass

    with _serve(Handler) as port:
        yield RunningServer(port, log)


@contextmanager
def relay(cert_pem_path: str, key_pem_path: str, upstream_port: int, ca_file: str) -> Iterator[int]:
    """A man in the middle: terminates TLS with its own certificate and relays plaintext."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_pem_path, key_pem_path)
    upstream_ctx = ssl.create_default_context(cafile=ca_file)
    loop = asyncio.new_event_loop()
    ready: list[int] = []

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", upstream_port, ssl=upstream_ctx, server_hostname="localhost"
            )
        except (OSError, ssl.SSLError):
            writer.close()
            return
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def start() -> asyncio.Server:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        ready.append(server.sockets[0].getsockname()[1])
        return server

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start(), loop).result(5)
    try:
        yield ready[0]
    finally:

        async def stop() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@contextmanager
def _serve(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    server = _TLSServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
