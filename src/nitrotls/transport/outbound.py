"""The host's outbound proxy: enclaves reach only allow-listed ``host:port`` pairs.

The destination is either fixed for the listener (``to``; every connection goes there, no
preamble) or asked for per connection with the ``CONNECT host:port`` line of
:mod:`nitrotls.transport.preamble`. Every refusal is logged as one line naming the attempted
destination and the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nitrotls.transport import preamble
from nitrotls.transport.address import Address
from nitrotls.transport.allowlist import AllowList, Destination
from nitrotls.transport.errors import AllowListError, PreambleError, TransportConnectError
from nitrotls.transport.proxy import DEFAULT_CONNECT_TIMEOUT, Opener
from nitrotls.transport.sockets import Streams, connect

log = logging.getLogger("nitrotls.transport")

DEFAULT_PREAMBLE_TIMEOUT = 10.0


def outbound_opener(
    allow: AllowList,
    *,
    to: Destination | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    preamble_timeout: float = DEFAULT_PREAMBLE_TIMEOUT,
) -> Opener:
    """An opener that connects only to destinations ``allow`` permits."""
    if to is not None and not allow.permits(to):
        raise AllowListError(f"--to {to} is not in the allow list; add it or choose another")

    async def open_upstream(client: Streams, peer: str) -> Streams | None:
        if to is not None:
            return await _dial(to, client, peer, answer=False, timeout=connect_timeout)
        try:
            wanted = await preamble.read_request(client[0], timeout=preamble_timeout)
        except PreambleError as error:
            log.warning("outbound refused a malformed request from %s: %s", peer, error)
            await _answer(client[1], preamble.refusal("bad-request"))
            return None
        if not allow.permits(wanted):
            log.warning("outbound refused %s from %s: not in the allow list", wanted, peer)
            await _answer(client[1], preamble.refusal("not-allowed"))
            return None
        return await _dial(wanted, client, peer, answer=True, timeout=connect_timeout)

    return open_upstream


async def _dial(
    destination: Destination, client: Streams, peer: str, *, answer: bool, timeout: float
) -> Streams | None:
    try:
        upstream = await connect(Address.tcp(destination.host, destination.port), timeout=timeout)
    except TransportConnectError as error:
        log.warning("outbound could not reach %s for %s: %s", destination, peer, error)
        if answer:
            await _answer(client[1], preamble.refusal("unreachable"))
        return None
    if answer:
        await _answer(client[1], preamble.OK)
    return upstream


async def _answer(writer: asyncio.StreamWriter, line: bytes) -> None:
    writer.write(line)
    with contextlib.suppress(OSError):
        await writer.drain()
