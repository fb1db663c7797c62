"""The relaying server behind ``host inbound``, ``host outbound`` and ``enclave forward``.

One :class:`ProxyServer` accepts connections, enforces a connection limit, asks an *opener* for
the upstream connection (plain connect, PROXY v2 header, allow-listed destination, preamble),
relays bytes with half-close and an idle timeout, and on :meth:`ProxyServer.stop` stops
accepting and lets open connections drain for a bounded time before aborting them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nitrotls.transport import proxy_protocol
from nitrotls.transport.address import Address, format_host_port
from nitrotls.transport.errors import PreambleError, TransportConnectError
from nitrotls.transport.preamble import request_destination
from nitrotls.transport.relay import close_writer, relay
from nitrotls.transport.sockets import Listener, Streams, connect, listen

log = logging.getLogger("nitrotls.transport")

Opener = Callable[[Streams, str], Awaitable[Streams | None]]
"""Given the client's streams and a printable peer, return upstream streams, or ``None`` when
the connection was refused (the opener has logged why and answered the client if it should)."""

DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0


class ProxyServer:
    """Listen on one address and relay every accepted connection to what ``opener`` returns."""

    def __init__(
        self,
        name: str,
        listen_address: Address,
        opener: Opener,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.name = name
        self.listen_address = listen_address
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout or None
        self._opener = opener
        self._listener: Listener | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._at_limit = False

    @property
    def address(self) -> Address:
        """The bound address (a TCP port 0 resolved), once started."""
        return self._listener.address if self._listener else self.listen_address

    @property
    def active(self) -> int:
        """Connections being relayed right now."""
        return len(self._tasks)

    async def start(self) -> Listener:
        self._listener = await listen(self.listen_address, self._handle)
        return self._listener

    async def stop(self, drain: float = 5.0) -> None:
        """Stop accepting; give open connections ``drain`` seconds, then abort the rest."""
        if self._listener is not None:
            self._listener.close()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=drain)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_name(writer)
        if len(self._tasks) >= self.max_connections:
            self._refuse_over_limit(writer, peer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve((reader, writer), peer)
        finally:
            self._tasks.discard(task)
            if self._at_limit and len(self._tasks) < self.max_connections:
                self._at_limit = False

    def _refuse_over_limit(self, writer: asyncio.StreamWriter, peer: str) -> None:
        writer.transport.abort()
        if not self._at_limit:
            self._at_limit = True
            log.warning(
                "%s: connection limit of %d reached; refusing new connections (first: %s)",
                self.name,
                self.max_connections,
                peer,
            )

    async def _serve(self, client: Streams, peer: str) -> None:
        upstream: Streams | None = None
        try:
            upstream = await self._opener(client, peer)
            if upstream is None:
                return
            result = await relay(client, upstream, idle_timeout=self.idle_timeout)
            log.debug(
                "%s: %s done (%s%s): %d bytes in, %d out",
                self.name,
                peer,
                result.outcome,
                f": {result.detail}" if result.detail else "",
                result.sent,
                result.received,
            )
        except (TransportConnectError, PreambleError) as error:
            log.warning("%s: dropping %s: %s", self.name, peer, error)
        except OSError as error:
            log.info("%s: %s went away while connecting: %s", self.name, peer, error)
        except asyncio.CancelledError:
            # stop() ran out of drain time: cut the connection now rather than linger
            client[1].transport.abort()
            if upstream is not None:
                upstream[1].transport.abort()
            raise
        except Exception:
            log.exception("%s: unexpected error relaying %s", self.name, peer)
        finally:
            await close_writer(client[1])
            if upstream is not None:
                await close_writer(upstream[1])


def peer_name(writer: asyncio.StreamWriter) -> str:
    """A printable name for the connection's peer (``ip:port``, ``vsock cid:port``, ``unix``)."""
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2 and isinstance(peer[0], str):
        return format_host_port(peer[0], int(peer[1]))
    if isinstance(peer, tuple) and len(peer) == 2:
        return f"vsock {peer[0]}:{peer[1]}"
    return "unix peer"


def inbound_opener(
    to: Address, *, proxy_header: bool = False, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> Opener:
    """Connect to ``to`` and, when asked, announce the client with a PROXY v2 header first."""

    async def open_upstream(client: Streams, peer: str) -> Streams | None:
        upstream = await connect(to, timeout=connect_timeout)
        if proxy_header:
            writer = client[1]
            header = proxy_protocol.header_for(
                writer.get_extra_info("peername"), writer.get_extra_info("sockname")
            )
            upstream[1].write(proxy_protocol.encode(header))
        return upstream

    return open_upstream


def forward_opener(
    to: Address,
    *,
    preamble: tuple[str, int] | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Opener:
    """Connect to ``to``; with ``preamble``, first ask the outbound proxy for that destination."""

    async def open_upstream(client: Streams, peer: str) -> Streams | None:
        upstream = await connect(to, timeout=connect_timeout)
        if preamble is not None:
            try:
                await request_destination(upstream, *preamble, timeout=connect_timeout)
            except BaseException:
                upstream[1].transport.abort()
                raise
        return upstream

    return open_upstream
