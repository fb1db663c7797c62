"""``connect()``: TLS with ordinary certificate validation, then proof of the enclave, then you.

The attestation request travels on the very TLS connection that is handed over, so the proof is
about that connection's certificate. Nothing the caller sends can leave before the verdict.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from types import TracebackType

from nitrotls.attestation import Policy, Verifier
from nitrotls.client.endpoint import Endpoint
from nitrotls.client.errors import AttestationExchangeError, ConnectFailedError
from nitrotls.client.exchange import AttestationExchange
from nitrotls.client.verdict import Verdict, judge

NONCE_BYTES = 32


def tls_context(ca: str | None = None) -> ssl.SSLContext:
    """A client context: system roots (or ``ca``), hostname checks, TLS 1.2 or later."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


@functools.lru_cache(maxsize=16)
def _shared_context(ca: str | None) -> ssl.SSLContext:
    """One context per CA file for :func:`connect`: loading roots costs more than a verify."""
    return tls_context(ca)


@dataclass
class AttestedConnection:
    """A TLS socket whose peer has been proven to be a measured enclave."""

    socket: ssl.SSLSocket
    verdict: Verdict
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.socket.close()

    def __enter__(self) -> AttestedConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    url: str,
    policy: Policy,
    *,
    verifier: Verifier | None = None,
    ca: str | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    allow_insecure_dev: bool = False,
) -> AttestedConnection:
    """Open ``url`` and return the connection only once its enclave is proven; else raise.

    ``context`` overrides the TLS client context (default: one cached per ``ca`` file, built by
    :func:`tls_context`); it must keep certificate and hostname verification on.
    """
    endpoint = Endpoint.parse(url)
    context = context or _shared_context(ca)
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        raise ConnectFailedError("the TLS context must verify the certificate and the hostname")
    sock = _open_tls(endpoint, context, timeout)
    try:
        nonce = os.urandom(NONCE_BYTES)
        document = _fetch_document(sock, endpoint, nonce, time.monotonic() + timeout)
        leaf = sock.getpeercert(binary_form=True)
        if not leaf:
            raise ConnectFailedError("the server presented no certificate")
        verdict = judge(
            host=endpoint.host,
            port=endpoint.port,
            document=document,
            leaf_der=leaf,
            nonce=nonce,
            verifier=verifier or Verifier(),
            policy=policy,
            allow_insecure_dev=allow_insecure_dev,
        )
        sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return AttestedConnection(sock, verdict)


def _open_tls(endpoint: Endpoint, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    try:
        raw = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except OSError as error:
        raise ConnectFailedError(f"cannot reach {endpoint.host}:{endpoint.port}: {error}") from None
    # Request/response traffic: without this, Nagle holds the request back until the server
    # acknowledges the handshake's last flight (a delayed ACK, ~40 ms).
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return context.wrap_socket(raw, server_hostname=endpoint.host)
    except (ssl.SSLError, OSError) as error:
        raw.close()
        raise ConnectFailedError(
            f"TLS with {endpoint.host}:{endpoint.port} failed: {error}"
        ) from None


def _fetch_document(
    sock: ssl.SSLSocket, endpoint: Endpoint, nonce: bytes, deadline: float
) -> bytes:
    exchange = AttestationExchange(endpoint.host_header, nonce)
    try:
        sock.sendall(exchange.request_bytes())
        while not exchange.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AttestationExchangeError("attestation reply timed out")
            sock.settimeout(remaining)
            exchange.feed(sock.recv(65536))
    except (OSError, ssl.SSLError) as error:
        raise AttestationExchangeError(f"attestation request failed: {error}") from None
    if not exchange.keeps_alive:
        raise AttestationExchangeError("server closed the connection after attesting")
    return exchange.document()
