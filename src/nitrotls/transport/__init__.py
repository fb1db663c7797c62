"""Enclave networking: one address type over vsock, Unix sockets and TCP, and the proxies.

An enclave's only link is vsock to its parent. :class:`Address` names an endpoint
(``vsock://CID:PORT``, ``unix:///PATH``, ``tcp://HOST:PORT``); :func:`listen` and :func:`connect`
give asyncio streams for any of them. In development ``vsock://`` maps to Unix sockets under the
data directory (see :mod:`nitrotls.transport.vsock` for how the mode is chosen). On top sit the
host's inbound passthrough (optionally with a PROXY v2 header, :mod:`.proxy_protocol`), the
host's allow-listed outbound proxy and the enclave's local forwarder, all :class:`ProxyServer`.
"""

from __future__ import annotations

from nitrotls.transport.address import Address, parse_address, parse_host_port
from nitrotls.transport.allowlist import AllowList, Destination, load_allowlist, parse_allowlist
from nitrotls.transport.errors import (
    AddressError,
    AllowListError,
    ListenError,
    PreambleError,
    ProxyProtocolError,
    SocketPathTooLongError,
    TransportConnectError,
    TransportError,
    VsockModeError,
)
from nitrotls.transport.outbound import outbound_opener
from nitrotls.transport.proxy import ProxyServer, forward_opener, inbound_opener
from nitrotls.transport.sockets import (
    Listener,
    bind_socket,
    connect,
    describe,
    listen,
    socket_path,
)
from nitrotls.transport.vsock import dev_socket_path, set_vsock_mode, vsock_mode

__all__ = [
    "Address",
    "AddressError",
    "AllowList",
    "AllowListError",
    "Destination",
    "ListenError",
    "Listener",
    "PreambleError",
    "ProxyProtocolError",
    "ProxyServer",
    "SocketPathTooLongError",
    "TransportConnectError",
    "TransportError",
    "VsockModeError",
    "bind_socket",
    "connect",
    "describe",
    "dev_socket_path",
    "forward_opener",
    "inbound_opener",
    "listen",
    "load_allowlist",
    "outbound_opener",
    "parse_address",
    "parse_allowlist",
    "parse_host_port",
    "set_vsock_mode",
    "socket_path",
    "vsock_mode",
]
