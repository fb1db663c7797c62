"""The HTTP-01 responder: serves ``/.well-known/acme-challenge/<token>`` from a store.

Runs on the host (port 80 in production) while the generator enclave writes key authorizations
into the store. Tokens are not secret, so the host may serve them; the responder only ever reads.
It answers that one path (404 elsewhere), bounds concurrent connections and per-connection time,
and never lets a store error crash it.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from nitrotls.errors import NitroTLSError

log = logging.getLogger(__name__)

PATH = re.compile(r"/\.well-known/acme-challenge/([A-Za-z0-9_-]{1,256})")
MAX_CONNECTIONS = 64
SOCKET_TIMEOUT = 10.0
POLL_INTERVAL = 0.05  # how quickly shutdown() is noticed


class ChallengeSource(Protocol):
    """Anything that can look a token up (every ``BundleStore`` can)."""

    def get_challenge(self, token: str) -> str | None: ...


class _Handler(BaseHTTPRequestHandler):
    server: ChallengeServer
    timeout = SOCKET_TIMEOUT
    server_version = "nitrotls-acme-responder"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        match = PATH.fullmatch(self.path.split("?", 1)[0])
        value = None
        if match is not None:
            try:
                value = self.server.source.get_challenge(match.group(1))
            except NitroTLSError as error:
                log.warning("challenge lookup failed: %s", error)
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"store unavailable\n", with_body)
                return
        if value is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", with_body)
        else:
            self._send(HTTPStatus.OK, value.encode("ascii"), with_body)

    def _send(self, status: HTTPStatus, body: bytes, with_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class ChallengeServer(ThreadingHTTPServer):
    """A threading HTTP server with a cap on simultaneous connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        source: ChallengeSource,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.source = source
        self._slots = threading.BoundedSemaphore(max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        if ":" in host_text:
            host_text = f"[{host_text}]"
        return f"http://{host_text}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over capacity: drop rather than queue unboundedly
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all interfaces) → address tuple."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen address {text!r}: expected HOST:PORT, e.g. 0.0.0.0:80")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


def start_responder(
    source: ChallengeSource, host: str = "127.0.0.1", port: int = 0
) -> tuple[ChallengeServer, threading.Thread]:
    """Serve in a background thread; stop with ``server.shutdown(); server.server_close()``."""
    server = ChallengeServer((host, port), source)
    thread = threading.Thread(
        target=server.serve_forever, args=(POLL_INTERVAL,), name="acme-responder", daemon=True
    )
    thread.start()
    return server, thread
