"""The accepted-connection socket type, kept out of the compiled modules.

A class deriving from a C type such as ``_socket.socket`` cannot be compiled by mypyc (the
compiled class would not have the C type's layout), so it lives in this interpreted module and
the compiled listener only instantiates it.
"""

from __future__ import annotations

import _socket


class Accepted(_socket.socket):
    """An accepted connection: the C socket object, plus the weak references ``_ssl`` takes,
    without ``socket.socket``'s Python layer (whose ``family`` and ``type`` build an enum member
    on every read). ``family`` and ``type`` are plain ints here."""

    __slots__ = ("__weakref__",)
