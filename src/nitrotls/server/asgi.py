"""``--app module:attr``: an ASGI application served in-process by uvicorn, on our TLS.

uvicorn loads certificates from files only, so it never sees our key directly: we bind the
listening socket ourselves and hand uvicorn a *key-less front* ``SSLContext``
(``ssl_context_factory``) whose SNI callback moves every handshake onto the context the
:class:`ContextHolder` holds at that moment (so hot reload works here too, and the front holds no
key). A subclass of uvicorn's h11 protocol learns, once the handshake is done, which certificate
its connection was shown, and wraps the application so that the attestation path is answered by
nitrotls with *that* certificate's binding, before the application sees the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn
from uvicorn.importer import ImportFromStringError, import_from_string
from uvicorn.protocols.http.h11_impl import H11Protocol

from nitrotls.server.attest import ATTESTATION_PATH, AttestationResponder, error_response
from nitrotls.server.errors import ServerConfigError
from nitrotls.server.identity import ContextHolder, ServedIdentity
from nitrotls.server.listener import ListeningSocket
from nitrotls.server.metrics import Metrics
from nitrotls.transport.address import Address

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AttestingApp:
    """Per connection: the attestation path answered by nitrotls, the rest by the app."""

    __slots__ = ("app", "attestation", "client", "identity")

    def __init__(
        self,
        app: ASGIApp,
        attestation: AttestationResponder | None,
        identity: ServedIdentity | None,
        client: str,
    ) -> None:
        self.app = app
        self.attestation = attestation
        self.identity = identity
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").encode() != ATTESTATION_PATH:
            await self.app(scope, receive, send)
            return
        if self.attestation is None or self.identity is None:
            response = error_response(404)
        else:
            query = scope.get("query_string", b"")
            target = ATTESTATION_PATH + (b"?" + query if query else b"")
            accept = b", ".join(v for k, v in scope.get("headers", []) if k == b"accept") or None
            response = await self.attestation.respond(
                scope["method"].encode(), target, accept, self.identity, self.client
            )
        headers = [(b"content-type", response.content_type), (b"cache-control", b"no-store")]
        for line in response.headers:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})


def protocol_class(
    holder: ContextHolder,
    attestation: AttestationResponder | None,
    metrics: Metrics,
    on_one_shot: Callable[[], None],
    on_close: Callable[[], None],
) -> type[H11Protocol]:
    """uvicorn's h11 protocol, taught which certificate its connection presented."""

    class NitroH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            metrics.handshakes += 1
            metrics.connections_active += 1
            sslobj = transport.get_extra_info("ssl_object")
            identity = holder.identity_for(sslobj.context) if sslobj is not None else None
            client = self.client[0] if self.client else "local"
            self.app = AttestingApp(self.app, attestation, identity, client)
            if holder.one_shot and holder.current() is not None:
                holder.spend()
                on_one_shot()

        def connection_lost(self, exc: Exception | None) -> None:
            metrics.connections_active -= 1
            super().connection_lost(exc)
            on_close()

    return NitroH11Protocol


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: ``nitrotls serve`` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ASGIFront:
    """uvicorn serving an ASGI app on our socket with our TLS contexts."""

    def __init__(
        self,
        options: Any,
        holder: ContextHolder,
        attestation: AttestationResponder | None,
        metrics: Metrics,
    ) -> None:
        self.options = options
        self.holder = holder
        self.attestation = attestation
        self.metrics = metrics
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._one_shot_spent = False
        self._done = asyncio.Event()
        self._listening: ListeningSocket | None = None

    async def start(self) -> Address:
        app = load_app(self.options.app)
        self._listening = ListeningSocket.open(self.options.listen, self.options.listener.backlog)
        sock = self._listening.sock
        front = self.holder.sni_front(["http/1.1"])
        protocol = protocol_class(
            self.holder, self.attestation, self.metrics, self._spent, self._closed
        )
        kwargs: dict[str, Any] = {
            "app": app,
            "http": protocol,
            "lifespan": "auto",
            "log_config": None,
            "access_log": False,
            "timeout_keep_alive": int(max(1, self.options.proxy.idle_timeout)),
            "timeout_graceful_shutdown": int(max(1, self.options.grace)),
            "limit_concurrency": self.options.listener.max_connections,
            "server_header": False,
        }
        if "ssl_context_factory" in inspect.signature(uvicorn.Config).parameters:
            kwargs["ssl_context_factory"] = lambda _config, _default: front
        config = uvicorn.Config(**kwargs)
        config.load()
        config.ssl = front  # older uvicorn: no factory hook; the loaded config is used as is
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        self._task.add_done_callback(lambda _t: self._done.set())
        while not self._server.started:
            if self._task.done():
                raise ServerConfigError(f"the ASGI app {self.options.app!r} failed to start")
            await asyncio.sleep(0.01)
        bound: Address = self.options.listen
        if bound.scheme == "tcp":
            bound = bound.with_port(int(sock.getsockname()[1]))
        return bound

    def _spent(self) -> None:
        self._one_shot_spent = True
        log.info("one-shot: first handshake done; dropping the TLS context and its key")

    def _closed(self) -> None:
        if self._one_shot_spent and self.metrics.connections_active <= 0:
            self._done.set()

    async def wait(self) -> None:
        await self._done.wait()

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._listening is not None:
            self._listening.close()


def load_app(spec: str) -> ASGIApp:
    """Import ``module:attr``; a typed error if it cannot be imported."""
    try:
        app: ASGIApp = import_from_string(spec)
    except ImportFromStringError as error:
        raise ServerConfigError(f"cannot load the ASGI app {spec!r}: {error}") from None
    return app
