"""HTTP for the local KMS: a threaded HTTP/1.1 server in front of :class:`KMSService`.

Bounded everywhere a client could make it wait or grow: request bodies (413 past the limit),
a deadline for reading each request, a cap on simultaneous connections (503 Throttling beyond
it), keep-alive connections closed on stop. One thread per connection; the service is
thread-safe. AWS's wire details: ``POST /``, ``X-Amz-Target``, JSON 1.1 bodies, errors as
``{"__type", "message"}`` with an ``x-amzn-RequestId`` header.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit

from nitrotls.attestation import Verifier
from nitrotls.kms.local import http11
from nitrotls.kms.local.audit import AuditLog
from nitrotls.kms.local.config import ServerConfig
from nitrotls.kms.local.errors import ConfigError
from nitrotls.kms.local.recipient import RecipientChecker
from nitrotls.kms.local.service import KMSService
from nitrotls.kms.local.sigv4 import WireRequest
from nitrotls.kms.local.storage import KeyStore

log = logging.getLogger("nitrotls.kms.local")
CONTENT_TYPE = "application/x-amz-json-1.1"
STOP_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.05  # how soon stop() is noticed by the accept loop


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"__type": code, "message": message}).encode()


class _Connection(socketserver.StreamRequestHandler):
    """One client connection: requests in order, kept alive until either side closes."""

    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)

    def handle(self) -> None:
        try:
            while self._serve_one():
                pass
        except OSError:  # the client went away or was too slow (TimeoutError is an OSError)
            return

    def _serve_one(self) -> bool:
        """Answer one request; True when the connection stays open for another."""
        try:
            head = http11.read_head(self.rfile)
            if head is None:
                return False
            if head.method != "POST":
                message = "The KMS API is POST / with an X-Amz-Target header."
                raise http11.HTTPRequestError(405, "UnknownOperationException", message)
            length = http11.content_length(head, self.server.max_request_bytes)
            if head.headers.get("expect", "").lower() == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self._read_exactly(length)
        except http11.HTTPRequestError as problem:
            self._send(problem.status, _error_body(problem.code, problem.message), close=True)
            return False
        if body is None:
            return False
        target = urlsplit(head.target)
        request = WireRequest(head.method, target.path, target.query, head.headers, body)
        answer = self.server.service.handle(request)
        self._send(answer.status, answer.body, close=not head.keep_alive)
        return head.keep_alive

    def _read_exactly(self, length: int) -> bytes | None:
        """The body, within one request timeout overall (not per read: no trickling)."""
        timeout = self.server.request_timeout
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        remaining = length
        while remaining:
            chunk = self.rfile.read1(min(remaining, 65536))
            if not chunk:
                return None
            chunks.append(chunk)
            remaining -= len(chunk)
            if remaining:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.connection.settimeout(left)
                timeout = left
        if timeout != self.server.request_timeout:
            self.connection.settimeout(self.server.request_timeout)
        return b"".join(chunks)

    def _send(self, status: int, body: bytes, *, close: bool) -> None:
        headers = {
            "Server": "nitrotls-kms",
            "Content-Type": CONTENT_TYPE,
            "x-amzn-RequestId": str(uuid.uuid4()),
        }
        self.wfile.write(http11.response(status, body, headers, close=close))
        log.debug("%s %s %d", self.client_address[0], "POST /", status)


class _HTTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: KMSService, config: ServerConfig):
        self.service = service
        self.request_timeout = config.request_timeout
        self.max_request_bytes = config.max_request_bytes
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        super().__init__(address, _Connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unexpected error on the connection from %s", client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._turn_away(request)
            return
        with self._active_lock:
            self._active.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._active_lock:
            if request in self._active:
                self._active.discard(request)
                self._slots.release()

    def _turn_away(self, request: socket.socket) -> None:
        body = _error_body("ThrottlingException", "Too many connections; retry shortly.")
        head = (
            f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def close_connections(self, grace: float) -> None:
        """Wake idle keep-alive readers, then wait up to ``grace`` seconds for handlers."""
        with self._active_lock:
            for sock in self._active:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._active_lock:
                if not self._active:
                    return
            time.sleep(0.02)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class LocalKMSServer:
    """The local KMS: store, audit log and HTTP server; ``start()`` serves in a thread."""

    def __init__(self, config: ServerConfig, *, verifier: Verifier | None = None) -> None:
        self.config = config
        if verifier is None:
            from nitrotls.nsm import trusted_verifier

            verifier = trusted_verifier(config.trust_dev_root)
        self.data_dir = config.resolved_data_dir()
        self.audit_path = config.resolved_audit_log()
        self._store = KeyStore(self.data_dir, config.region)
        try:
            self._audit = AuditLog(self.audit_path, fsync=config.audit_fsync)
        except BaseException:
            self._store.close()
            raise
        checker = RecipientChecker(verifier, config.recipient_max_age)
        self.service = KMSService(self._store, self._audit, checker, config.credential_map())
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        cls = _HTTPServer6 if ":" in self.config.host else _HTTPServer
        try:
            self._httpd = cls((self.config.host, self.config.port), self.service, self.config)
        except OSError as error:
            self._close_state()
            raise ConfigError(
                f"cannot listen on {self.config.host}:{self.config.port}: {error.strerror}"
            ) from None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(POLL_SECONDS,),
            name="nitrotls-kms",
            daemon=True,
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def endpoint_url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (briefly), close state. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            httpd.close_connections(STOP_GRACE_SECONDS)
        if self._thread is not None:
            self._thread.join(STOP_GRACE_SECONDS)
            self._thread = None
        self._close_state()

    def _close_state(self) -> None:
        self._audit.close()
        self._store.close()

    def __enter__(self) -> LocalKMSServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def running_server(
    home: Path | None = None,
    *,
    trust_dev_root: bool = True,
    config: ServerConfig | None = None,
) -> Iterator[str]:
    """A local KMS on 127.0.0.1 with an ephemeral port, for tests and demos; yields its URL.

    State lives under ``home/kms`` when ``home`` is given, else under the nitrotls data
    directory (``$NITROTLS_HOME``), so a second ``running_server`` on the same home sees the
    same keys (a restart). Callers sign with :data:`DEV_CREDENTIAL` unless ``config`` says
    otherwise.
    """
    chosen = config or ServerConfig()
    chosen = replace(chosen, host="127.0.0.1", port=0, trust_dev_root=trust_dev_root)
    if home is not None:
        chosen = replace(chosen, data_dir=home / "kms")
    with LocalKMSServer(chosen) as server:
        yield server.endpoint_url


def serve(
    config: ServerConfig,
    *,
    announce: Callable[[LocalKMSServer], None] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly. ``announce`` runs once listening."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with LocalKMSServer(config) as server:
            if announce is not None:
                announce(server)
            while not stop.wait(0.5):
                pass
            log.info("stopping the local KMS")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
