"""httpx integration: every new connection is attested once, before its first request.

httpcore opens connections through a network backend; we wrap it so that ``start_tls`` returns
only after the attestation request has been answered and judged on that TLS stream. httpcore then
sends the application request on the same stream, so no application byte can precede the verdict.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from nitrotls.attestation import Policy, Verifier
from nitrotls.client.attester import Attester, peer_leaf
from nitrotls.client.connect import tls_context
from nitrotls.client.errors import AttestationExchangeError

_READ = 65536
SocketOptions = Iterable[httpcore.SOCKET_OPTION] | None


class _AttestingStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, attester: Attester, host: str, port: int):
        self._inner, self._attester, self._host, self._port = inner, attester, host, port

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, timeout)
        try:
            self._attest(tls, timeout)
        except BaseException:
            tls.close()
            raise
        return tls

    def _attest(self, tls: httpcore.NetworkStream, timeout: float | None) -> None:
        leaf = peer_leaf(tls.get_extra_info("ssl_object"))
        if self._attester.cached(self._host, self._port, leaf) is not None:
            return
        exchange = self._attester.begin(self._host, self._port)
        tls.write(exchange.request_bytes(), timeout)
        while not exchange.feed(tls.read(_READ, timeout)):
            pass
        if not exchange.keeps_alive:
            raise AttestationExchangeError("server closed the connection after attesting")
        self._attester.finish(self._host, self._port, exchange, leaf)


class _AttestingBackend(httpcore.NetworkBackend):
    def __init__(self, attester: Attester) -> None:
        self._inner = httpcore.SyncBackend()
        self._attester = attester

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AttestingStream(stream, self._attester, host, port)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions = None
    ) -> httpcore.NetworkStream:
        raise AttestationExchangeError("attested connections need TCP, not a Unix socket")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncAttestingStream(httpcore.AsyncNetworkStream):
    def __init__(
        self, inner: httpcore.AsyncNetworkStream, attester: Attester, host: str, port: int
    ):
        self._inner, self._attester, self._host, self._port = inner, attester, host, port

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        try:
            await self._attest(tls, timeout)
        except BaseException:
            await tls.aclose()
            raise
        return tls

    async def _attest(self, tls: httpcore.AsyncNetworkStream, timeout: float | None) -> None:
        leaf = peer_leaf(tls.get_extra_info("ssl_object"))
        if self._attester.cached(self._host, self._port, leaf) is not None:
            return
        exchange = self._attester.begin(self._host, self._port)
        await tls.write(exchange.request_bytes(), timeout)
        while not exchange.feed(await tls.read(_READ, timeout)):
            pass
        if not exchange.keeps_alive:
            raise AttestationExchangeError("server closed the connection after attesting")
        self._attester.finish(self._host, self._port, exchange, leaf)


class _AsyncAttestingBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, attester: Attester) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._attester = attester

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AsyncAttestingStream(stream, self._attester, host, port)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions = None
    ) -> httpcore.AsyncNetworkStream:
        raise AttestationExchangeError("attested connections need TCP, not a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _pool_options(context: ssl.SSLContext, limits: httpx.Limits) -> dict[str, Any]:
    return {
        "ssl_context": context,
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
        "http1": True,
        "http2": False,
    }


class AttestedTransport(httpx.HTTPTransport):
    """An httpx transport whose connections are proven enclaves (HTTP/1.1 over TLS only)."""

    def __init__(
        self, attester: Attester, *, ca: str | None = None, limits: httpx.Limits | None = None
    ):
        context, limits = tls_context(ca), limits or httpx.Limits()
        super().__init__(verify=context, limits=limits)
        self.attester = attester
        # httpx builds its pool without a network-backend hook; replace it with one that attests.
        self._pool = httpcore.ConnectionPool(
            network_backend=_AttestingBackend(attester), **_pool_options(context, limits)
        )


class AsyncAttestedTransport(httpx.AsyncHTTPTransport):
    """The asyncio twin of :class:`AttestedTransport`."""

    def __init__(
        self, attester: Attester, *, ca: str | None = None, limits: httpx.Limits | None = None
    ):
        context, limits = tls_context(ca), limits or httpx.Limits()
        super().__init__(verify=context, limits=limits)
        self.attester = attester
        self._pool = httpcore.AsyncConnectionPool(
            network_backend=_AsyncAttestingBackend(attester), **_pool_options(context, limits)
        )


class Client(httpx.Client):
    """``httpx.Client`` whose every connection is attested: the one-line entry point."""

    def __init__(
        self,
        policy: Policy,
        *,
        verifier: Verifier | None = None,
        ca: str | None = None,
        allow_insecure_dev: bool = False,
        limits: httpx.Limits | None = None,
        **kwargs: Any,
    ) -> None:
        attester = Attester(policy, verifier or Verifier(), allow_insecure_dev)
        transport = AttestedTransport(attester, ca=ca, limits=limits)
        super().__init__(transport=transport, **kwargs)
        self.attester = attester


class AsyncClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose every connection is attested."""

    def __init__(
        self,
        policy: Policy,
        *,
        verifier: Verifier | None = None,
        ca: str | None = None,
        allow_insecure_dev: bool = False,
        limits: httpx.Limits | None = None,
        **kwargs: Any,
    ) -> None:
        attester = Attester(policy, verifier or Verifier(), allow_insecure_dev)
        transport = AsyncAttestedTransport(attester, ca=ca, limits=limits)
        super().__init__(transport=transport, **kwargs)
        self.attester = attester
