"""An ``ssl.SSLContext`` built from memory, under one fixed TLS policy.

Python's ``ssl`` module loads keys only from files. The key therefore goes through an anonymous
``memfd`` (memory-backed, never on a file system, closed at once) in a PEM form that we build in a
``bytearray`` and wipe ourselves; see docs/server.md for what OpenSSL keeps afterwards.

Policy (Mozilla "intermediate", ECDHE only): TLS 1.2 and 1.3; for 1.2 only ECDHE with AES-GCM or
ChaCha20-Poly1305; key exchange groups X25519, P-256, P-384; no compression, no renegotiation,
no session tickets and no session cache (every connection is a full handshake, so no secret
outlives its connection and a swapped-out key leaves no resumable session behind); the client's
cipher order wins, as Mozilla recommends.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import ssl
import sys
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nitrotls.secrets import wipe
from nitrotls.server.errors import TLSContextError

log = logging.getLogger(__name__)

TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
GROUPS = b"X25519:P-256:P-384"
ALPN_HTTP1 = ("http/1.1",)

_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_SET_READ_AHEAD = 41
_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_SESS_CACHE_OFF = 0
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def policy_context(alpn: Sequence[str] = ALPN_HTTP1) -> ssl.SSLContext:
    """A server context carrying the policy but no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.num_tickets = 0
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    _apply_native_policy(ctx)
    ctx.sslobject_class = DirectSSLObject
    return ctx


class DirectSSLObject(ssl.SSLObject):
    """An ``SSLObject`` whose hot methods are the ``_ssl`` methods themselves.

    ``ssl.SSLObject`` forwards every call (``read``, ``write``, ``do_handshake``, ...) through a
    Python method to the C object it wraps; the event loop's TLS layer makes several such calls
    per connection and per request. Binding the C methods on the instance skips that frame
    (measured: a few percent of the proxy's CPU). Each wrapper only forwards its positional
    arguments, which is how the event loops call them; the methods called once per connection
    (``getpeercert``, ``cipher``, ...) keep their wrappers and keyword arguments. Set through the
    public ``SSLContext.sslobject_class`` hook; if the wrapped object is not where it used to be,
    the plain wrappers stay in place.
    """

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        self: DirectSSLObject = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = self.__dict__.get("_sslobj")
        if inner is not None and hasattr(inner, "shutdown"):
            attributes = self.__dict__
            attributes["do_handshake"] = inner.do_handshake
            attributes["read"] = inner.read
            attributes["write"] = inner.write
            attributes["pending"] = inner.pending
            attributes["unwrap"] = inner.shutdown
        return self


def context_from_memory(
    chain: Sequence[bytes], key_pkcs8: bytearray, *, alpn: Sequence[str] = ALPN_HTTP1
) -> ssl.SSLContext:
    """Load ``chain`` (DER, leaf first) and ``key_pkcs8`` (DER) into a new policy context.

    The caller keeps ownership of ``key_pkcs8`` and wipes it; every copy made here is wiped here.
    OpenSSL refuses a key that does not match the leaf, which surfaces as :class:`TLSContextError`.
    """
    if not chain:
        raise TLSContextError("cannot build a TLS context: the certificate chain is empty")
    ctx = policy_context(alpn)
    pem = bytearray()
    try:
        for der in chain:
            pem += ssl.DER_cert_to_PEM_cert(bytes(der)).encode("ascii")
        _append_key_pem(pem, key_pkcs8)
        _load_via_memfd(ctx, pem)
    finally:
        wipe(pem)
    return ctx


def _append_key_pem(pem: bytearray, der: bytearray) -> None:
    """Append the PEM form of a PKCS#8 key to ``pem`` without an immutable copy of the key."""
    body = _b64_bytearray(der)
    try:
        pem += b"-----BEGIN PRIVATE KEY-----\n"
        for start in range(0, len(body), 64):
            pem += memoryview(body)[start : start + 64]
            pem += b"\n"
        pem += b"-----END PRIVATE KEY-----\n"
    finally:
        wipe(body)


def _b64_bytearray(data: bytearray) -> bytearray:
    """Standard base64 into a fresh bytearray (``base64`` would return immutable ``bytes``)."""
    out = bytearray(((len(data) + 2) // 3) * 4)
    view = memoryview(data)
    j = 0
    for i in range(0, len(data) - len(data) % 3, 3):
        n = (view[i] << 16) | (view[i + 1] << 8) | view[i + 2]
        out[j] = _B64[n >> 18]
        out[j + 1] = _B64[(n >> 12) & 63]
        out[j + 2] = _B64[(n >> 6) & 63]
        out[j + 3] = _B64[n & 63]
        j += 4
    rest = len(data) % 3
    if rest:
        n = view[len(data) - rest] << 16
        if rest == 2:
            n |= view[len(data) - 1] << 8
        out[j] = _B64[n >> 18]
        out[j + 1] = _B64[(n >> 12) & 63]
        out[j + 2] = _B64[(n >> 6) & 63] if rest == 2 else 61
        out[j + 3] = 61
    return out


def _load_via_memfd(ctx: ssl.SSLContext, pem: bytearray) -> None:
    """Hand ``pem`` to OpenSSL through an anonymous in-memory file, then zero and close it."""
    if not hasattr(os, "memfd_create"):
        raise TLSContextError(
            "this platform has no memfd_create; nitrotls never writes a private key to a file "
            "system, so it cannot load one here (Linux is required)"
        )
    fd = os.memfd_create("nitrotls-tls", os.MFD_CLOEXEC)
    try:
        _write_all(fd, pem)
        path = Path(f"/proc/self/fd/{fd}")
        try:
            ctx.load_cert_chain(path, path)
        except ssl.SSLError as error:
            raise TLSContextError(
                f"OpenSSL refused the certificate chain or key ({error.reason or error}); "
                "the key must be PKCS#8 DER matching the leaf certificate"
            ) from None
        except OSError as error:
            raise TLSContextError(f"cannot read the in-memory key file: {error}") from None
    finally:
        _zero_and_close(fd, len(pem))


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _zero_and_close(fd: int, length: int) -> None:
    try:
        os.pwrite(fd, bytes(length), 0)
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


# -- what Python's ssl module does not expose: the group list and the session cache mode --------


def _apply_native_policy(ctx: ssl.SSLContext) -> None:
    """Restrict key exchange groups and turn off the session cache through libssl itself."""
    native = _native()
    pointer = native.ctx_pointer(ctx) if native else None
    if native is None or pointer is None:
        log.warning(
            "cannot reach libssl directly (%s); restricting key exchange to P-256 only and "
            "leaving TLS 1.2 session-ID resumption on",
            _why_no_direct_path(native),
        )
        ctx.set_ecdh_curve("prime256v1")
        return
    if native.ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, GROUPS) != 1:
        raise TLSContextError(f"OpenSSL refused the key exchange groups {GROUPS.decode()}")
    native.ctrl(pointer, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)
    if ssl_access() is not None:
        # OpenSSL reads whole socket buffers instead of one record header, then its body: a
        # handshake costs half the reads. Only when the transport can ask OpenSSL whether it
        # holds unread input (readiness from the kernel no longer says so).
        native.ctrl(pointer, _SSL_CTRL_SET_READ_AHEAD, 1, None)


def _why_no_direct_path(native: _Native | None) -> str:
    """What a person can do about the fallback, in one clause."""
    if native is None:
        return "the libssl that _ssl uses is not visible in /proc/self/maps"
    if not _layout_known():
        checked = ", ".join(f"{major}.{minor}" for major, minor in _CHECKED_RELEASES)
        running = ".".join(map(str, sys.version_info[:3]))
        return (
            f"{sys.implementation.name} {running} is not a checked release (CPython {checked}, "
            "not free-threaded): serve with one, or check this one as docs/server.md describes"
        )
    return "this interpreter's _ssl objects did not pass the layout probe"


class _Native:
    """ctypes access to the libssl that Python's ``_ssl`` module is linked against."""

    def __init__(self, lib: ctypes.CDLL, held: ctypes.PyDLL) -> None:
        # The per-connection calls keep the GIL (``held``): they never block (non-blocking
        # sockets), and releasing and taking it back cost more than the calls themselves.
        self.has_pending = held.SSL_has_pending
        self.has_pending.restype = ctypes.c_int
        self.has_pending.argtypes = [ctypes.c_void_p]
        self.shutdown = held.SSL_shutdown
        self.shutdown.restype = ctypes.c_int
        self.shutdown.argtypes = [ctypes.c_void_p]
        self.clear_errors = held.ERR_clear_error  # libcrypto's, found through libssl
        self.clear_errors.restype = None
        self.clear_errors.argtypes = []
        self._get_fd = lib.SSL_get_fd
        self._get_fd.restype = ctypes.c_int
        self._get_fd.argtypes = [ctypes.c_void_p]
        self._ctrl = lib.SSL_CTX_ctrl
        self._ctrl.restype = ctypes.c_long
        self._ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
        self._options = lib.SSL_CTX_get_options
        self._options.restype = ctypes.c_uint64
        self._options.argtypes = [ctypes.c_void_p]
        self._get_ctx = lib.SSL_get_SSL_CTX
        self._get_ctx.restype = ctypes.c_void_p
        self._get_ctx.argtypes = [ctypes.c_void_p]
        self._offset: int | None = None
        self._offset_known = False

    def ctrl(self, pointer: int, cmd: int, larg: int, parg: bytes | None) -> int:
        return int(self._ctrl(pointer, cmd, larg, parg))

    def ctx_pointer(self, ctx: ssl.SSLContext) -> int | None:
        """The ``SSL_CTX*`` inside ``ctx``, as libssl itself reports it (``SSL_get_SSL_CTX``) for
        a throwaway connection made from ``ctx`` whose ``SSL*`` is confirmed (see
        :meth:`ssl_offset`); ``None`` unless it also is the word CPython keeps first after the
        context's object header and its options are the ones Python reports."""
        offset = self.ssl_offset()
        if offset is None:
            return None
        a, b = socket.socketpair()
        with a, b:
            probe = _wrap_probe(ctx, a)
            ssl_pointer = _guessed_ssl_pointer(probe, ctx, offset)
            if not ssl_pointer:
                return None
            pointer = self._get_ctx(ssl_pointer)
            del probe
        if not pointer:
            return None
        if type(ctx).__basicsize__ < 3 * _WORD or pointer != _word(id(ctx) + 2 * _WORD):
            return None
        return int(pointer) if int(self._options(pointer)) == int(ctx.options) else None

    def ssl_offset(self) -> int | None:
        """Where ``_ssl``'s socket objects keep their ``SSL*``, or ``None``; found once.

        The layout assumed (CPython 3.11 to 3.13): object header, a weak reference to the
        socket, the ``SSL*``, the context object. Confirmed on two throwaway objects in two
        steps: the word after the guess must be the address of the context the object was made
        with (a read inside the object, nothing followed), and only then does libssl see the
        guess: ``SSL_get_fd`` on it must name the probe's socket.
        """
        if not self._offset_known:
            self._offset = self._find_ssl_offset()
            self._offset_known = True
        return self._offset

    def _find_ssl_offset(self) -> int | None:
        if not _layout_known():
            return None
        offset = 3 * _WORD
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        for _ in range(2):
            a, b = socket.socketpair()
            with a, b:
                probe = _wrap_probe(ctx, a)
                pointer = _guessed_ssl_pointer(probe, ctx, offset)
                if not pointer or int(self._get_fd(pointer)) != a.fileno():
                    return None
                del probe
        return offset


_WORD = ctypes.sizeof(ctypes.c_void_p)


def _word(address: int) -> int | None:
    """The pointer-sized word at ``address`` (only ever inside a live object we hold)."""
    return ctypes.c_void_p.from_address(address).value


def _guessed_ssl_pointer(probe: Any, ctx: ssl.SSLContext, offset: int) -> int | None:
    """The word at ``offset`` in ``probe`` if the word after it is ``ctx``'s address (both
    read inside the object, nothing followed); else ``None``."""
    if probe is None or type(probe).__basicsize__ < offset + 2 * _WORD:
        return None
    if _word(id(probe) + offset + _WORD) != id(ctx):
        return None
    return _word(id(probe) + offset)


def _wrap_probe(ctx: ssl.SSLContext, sock: socket.socket) -> Any:
    """A server-side ``_ssl`` socket object over ``sock`` (``None`` if ``_ssl`` changed)."""
    wrap = getattr(ctx, "_wrap_socket", None)
    if wrap is None:
        return None
    try:
        return wrap(sock, True, None, owner=None, session=None)
    except TypeError:
        return None


# CPython releases on which the layout the probes above assume (PySSLSocket: header, weakref,
# SSL*, context; PySSLContext: header, SSL_CTX*) was checked by running tests/server/test_tls.py
# and tests/server/test_tlsconn.py on them (3.11.7, 3.12.1, 3.13.0). The probe hands a guessed
# pointer to libssl only after the word beside it proved to be the context's address, but a
# future layout could still put that address beside some other field, so on any other
# interpreter (a release not listed, a free-threaded or trace-refs build, whose object header is
# larger) the direct path is not tried at all and the portable one serves instead. To add a
# release: compare PySSLSocket in its Modules/_ssl.c, then run those two test files on it
# (`make compat PYTHONS=python3.N`).
_CHECKED_RELEASES = ((3, 11), (3, 12), (3, 13))


def _layout_known() -> bool:
    return (
        sys.implementation.name == "cpython"
        and sys.version_info[:2] in _CHECKED_RELEASES
        and not hasattr(sys, "getobjects")  # a trace-refs build: a larger object header
        and not sysconfig.get_config_var("Py_GIL_DISABLED")  # free-threaded: a larger header
    )


@dataclass(frozen=True)
class SSLAccess:
    """Direct calls on the ``SSL*`` inside ``_ssl``'s socket objects (found at ``offset``)."""

    offset: int
    has_pending: Callable[[int], int]  # does OpenSSL hold input the kernel no longer shows?
    shutdown: Callable[[int], int]  # one SSL_shutdown: send close_notify, wait for nothing
    clear_errors: Callable[[], None]


_access_cache: list[SSLAccess | None] = []


def ssl_access() -> SSLAccess | None:
    """:class:`SSLAccess` if the ``SSL*`` offset is confirmed, else ``None``."""
    if not _access_cache:
        native = _native()
        offset = native.ssl_offset() if native is not None else None
        access = None
        if native is not None and offset is not None:
            access = SSLAccess(offset, native.has_pending, native.shutdown, native.clear_errors)
        _access_cache.append(access)
    return _access_cache[0]


_native_cache: list[_Native | None] = []


def _native() -> _Native | None:
    if not _native_cache:
        _native_cache.append(_load_native())
    return _native_cache[0]


def _load_native() -> _Native | None:
    path = _loaded_libssl_path()
    if path is None:
        return None
    try:
        return _Native(ctypes.CDLL(path), ctypes.PyDLL(path))
    except (OSError, AttributeError):
        return None


def _loaded_libssl_path() -> str | None:
    """The libssl mapped into this process by ``_ssl`` (never a different copy from disk)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.rpartition(" ")[2]
        if "/libssl.so" in path:
            return path
    return None
