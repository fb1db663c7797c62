"""What a listener serves right now: one TLS context and the identity it proves.

A connection picks the current :class:`Served` when it is accepted and keeps it for its whole
life, so a hot reload switches new connections only, and the attestation a connection gets
always binds the certificate that very connection was shown.
"""

from __future__ import annotations

import ssl
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509

from nitrotls import binding


@dataclass(frozen=True)
class ServedIdentity:
    """The served leaf and where it came from (``bundle_id`` empty in insecure mode)."""

    leaf: bytes
    spki_sha384: bytes
    bundle_id: bytes
    seq: int
    name: str
    not_after: datetime
    insecure: bool = False

    @classmethod
    def for_chain(
        cls,
        chain: list[bytes] | tuple[bytes, ...],
        *,
        bundle_id: bytes,
        seq: int,
        name: str,
        insecure: bool = False,
    ) -> ServedIdentity:
        leaf = bytes(chain[0])
        cert = x509.load_der_x509_certificate(leaf)
        return cls(
            leaf=leaf,
            spki_sha384=binding.spki_sha384(leaf),
            bundle_id=bytes(bundle_id),
            seq=seq,
            name=name,
            not_after=cert.not_valid_after_utc,
            insecure=insecure,
        )

    def user_data(self) -> bytes:
        """The deterministic CBOR binding of ARCHITECTURE.md §4 for this leaf."""
        tag = binding.TLS_INSECURE_TAG if self.insecure else binding.TLS_TAG
        return binding.TLSBinding(tag, self.spki_sha384, self.bundle_id).encode()

    def seconds_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds()


@dataclass(frozen=True)
class Served:
    """A loaded TLS context and the identity its certificate carries."""

    context: ssl.SSLContext
    identity: ServedIdentity


class ContextHolder:
    """The current :class:`Served`, swapped atomically; ``None`` once a one-shot is spent."""

    def __init__(self, served: Served | None = None, *, one_shot: bool = False) -> None:
        self._served = served
        self._lock = threading.Lock()
        self.one_shot = one_shot
        self._by_context: weakref.WeakKeyDictionary[ssl.SSLContext, ServedIdentity] = (
            weakref.WeakKeyDictionary()
        )
        if served is not None:
            self._remember(served)

    def current(self) -> Served | None:
        return self._served

    def swap(self, served: Served) -> Served | None:
        """Serve ``served`` to new connections; return the previous one."""
        with self._lock:
            previous, self._served = self._served, served
            self._remember(served)
            return previous

    def spend(self) -> None:
        """Forget the context (and with it OpenSSL's copy of the key, once no connection
        still uses it): what ``--one-shot`` does after its first handshake."""
        with self._lock:
            self._served = None
            self._by_context.clear()

    def identity_for(self, context: ssl.SSLContext) -> ServedIdentity | None:
        """The identity served by ``context`` (for connections that only know their context)."""
        return self._by_context.get(context)

    def _remember(self, served: Served) -> None:
        self._by_context[served.context] = served.identity

    def sni_front(self, alpn: list[str]) -> ssl.SSLContext:
        """A key-less context whose SNI callback moves each handshake onto the current one.

        For servers that accept connections themselves (uvicorn): they hold this front context
        forever, while the key lives only in the swappable contexts behind it.
        """
        from nitrotls.server.tls import policy_context

        front = policy_context(alpn)

        def choose(sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> int | None:
            served = self._served
            if served is None:
                return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
            sslobj.context = served.context
            return None

        front.sni_callback = choose
        return front
