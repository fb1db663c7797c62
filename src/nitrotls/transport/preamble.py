"""The one-line request an enclave sends the outbound proxy when no ``--to`` is fixed.

The client sends ``CONNECT <host>:<port>\\n`` (ASCII, IPv6 in brackets, at most 300 bytes); the
proxy answers ``OK\\n`` and from then on relays bytes, or ``ERR <reason>\\n`` and closes. Reasons:
``bad-request``, ``not-allowed``, ``unreachable``, ``timeout``. Bytes the client sends after its
newline (say a TLS ClientHello sent without waiting) are relayed, not lost.
"""

from __future__ import annotations

import asyncio

from nitrotls.transport.allowlist import Destination
from nitrotls.transport.errors import AddressError, PreambleError
from nitrotls.transport.sockets import Streams

MAX_LINE = 300
OK = b"OK\n"


def format_request(destination: Destination) -> bytes:
    return f"CONNECT {destination}\n".encode("ascii")


def parse_request(line: bytes) -> Destination:
    """Parse one request line (with its newline); :class:`PreambleError` when malformed."""
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise PreambleError(f"request line is not a newline-terminated line of <= {MAX_LINE} bytes")
    try:
        text = line[:-1].decode("ascii").removesuffix("\r")
    except UnicodeDecodeError:
        raise PreambleError(f"request line is not ASCII: {line[:80]!r}") from None
    verb, _, target = text.partition(" ")
    if verb != "CONNECT" or not target:
        raise PreambleError(f"expected 'CONNECT host:port', found {text[:80]!r}")
    try:
        return Destination.parse(target)
    except AddressError as error:
        raise PreambleError(str(error)) from None


async def read_request(reader: asyncio.StreamReader, *, timeout: float) -> Destination:
    """Read and parse the client's request line (the proxy side)."""
    try:
        async with asyncio.timeout(timeout):
            line = await reader.readuntil(b"\n")
    except TimeoutError:
        raise PreambleError(f"no CONNECT line within {timeout}s") from None
    except asyncio.IncompleteReadError as error:
        raise PreambleError(
            f"connection closed before the CONNECT line: {error.partial[:80]!r}"
        ) from None
    except asyncio.LimitOverrunError:
        raise PreambleError("CONNECT line too long") from None
    return parse_request(line)


def refusal(reason: str) -> bytes:
    return f"ERR {reason}\n".encode("ascii")


async def request_destination(upstream: Streams, host: str, port: int, *, timeout: float) -> None:
    """Ask the outbound proxy on ``upstream`` for ``host:port``; raise unless it says OK."""
    destination = Destination.of(host, port)
    reader, writer = upstream
    writer.write(format_request(destination))
    try:
        async with asyncio.timeout(timeout):
            await writer.drain()
            answer = await reader.readuntil(b"\n")
    except TimeoutError:
        raise PreambleError(f"no answer from the outbound proxy within {timeout}s") from None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        raise PreambleError(
            f"the outbound proxy closed the connection instead of answering for {destination}"
        ) from None
    if answer != OK:
        shown = answer[:80].decode("ascii", "replace").strip()
        raise PreambleError(f"the outbound proxy refused {destination}: {shown}")
