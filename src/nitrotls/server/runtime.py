"""A running TLS front: listener, mode (HTTP proxy, raw TCP, ASGI) and health port together.

:class:`TLSServer` is what ``nitrotls serve`` and the tests drive; it knows nothing of bundles:
it serves whatever the :class:`ContextHolder` holds, so loading and reloading stay elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from nitrotls.nsm.source import AttestationSource
from nitrotls.server import ENGINE
from nitrotls.server.attest import AttestationResponder
from nitrotls.server.errors import ServerConfigError
from nitrotls.server.health import HealthServer
from nitrotls.server.identity import ContextHolder
from nitrotls.server.listener import (
    ConnectionFactory,
    ConnectionRegistry,
    ListenSettings,
    TLSListener,
)
from nitrotls.server.metrics import Metrics
from nitrotls.server.proxy import ProxyEngine, ProxySettings
from nitrotls.server.upstream import UpstreamPool
from nitrotls.transport.address import Address, format_host_port, parse_host_port

log = logging.getLogger(__name__)

Mode = Literal["http", "tcp", "asgi"]
ATTEST_ALPN = "nitrotls-attest/1"
_MODE_NAMES: dict[Mode, str] = {
    "http": "reverse-proxy mode (--upstream http://HOST:PORT)",
    "tcp": "raw TCP mode (--upstream tcp://HOST:PORT)",
    "asgi": "ASGI mode (--app MODULE:ATTR)",
}


@dataclass(frozen=True)
class Upstream:
    """Where decrypted traffic goes: ``http://HOST:PORT`` (proxy) or ``tcp://HOST:PORT`` (raw)."""

    mode: Literal["http", "tcp"]
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Upstream:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "tcp"):
            raise ServerConfigError(
                f"upstream {text!r}: expected http://HOST:PORT (reverse proxy) or "
                "tcp://HOST:PORT (raw bytes after TLS)"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ServerConfigError(f"upstream {text!r}: give only scheme://HOST:PORT")
        try:
            host, port = parse_host_port(parts.netloc, what=f"upstream {text!r}")
        except Exception as error:
            raise ServerConfigError(str(error)) from None
        if port == 0:
            raise ServerConfigError(f"upstream {text!r}: port 0 is not a destination")
        return cls(parts.scheme, host, port)  # type: ignore[arg-type]

    @property
    def authority(self) -> bytes:
        return format_host_port(self.host, self.port).encode("ascii")


@dataclass(frozen=True)
class ServeOptions:
    """Everything about serving except where the certificate comes from."""

    listen: Address
    upstream: Upstream | None = None
    app: str | None = None
    proxy: ProxySettings = field(default_factory=ProxySettings)
    listener: ListenSettings = field(default_factory=ListenSettings)
    health: Address | None = None
    attestation_rate: float = 5.0
    attestation_burst: int = 20
    grace: float = 30.0
    raw_alpn: tuple[str, ...] = ()
    upstream_max_idle: int = 256

    def __post_init__(self) -> None:
        if (self.upstream is None) == (self.app is None):
            raise ServerConfigError("give exactly one of --upstream URL and --app MODULE:ATTR")
        if self.raw_alpn and self.mode != "tcp":
            raise ServerConfigError(
                f"raw_alpn (--alpn {' '.join(self.raw_alpn)}) applies only to raw TCP mode "
                "(--upstream tcp://HOST:PORT), where the upstream speaks the negotiated "
                f"protocol; {_MODE_NAMES[self.mode]} speaks http/1.1 only: remove raw_alpn / "
                "--alpn, or use a tcp:// upstream"
            )

    @property
    def mode(self) -> Mode:
        if self.app is not None:
            return "asgi"
        assert self.upstream is not None
        return self.upstream.mode

    @property
    def alpn(self) -> tuple[str, ...]:
        if self.mode == "tcp":
            return (ATTEST_ALPN, *self.raw_alpn)
        return ("http/1.1",)


class TLSServer:
    """The listener plus its mode, attestation endpoint and health port."""

    def __init__(
        self,
        options: ServeOptions,
        holder: ContextHolder,
        source: AttestationSource | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.options = options
        self.holder = holder
        self.metrics = metrics or Metrics()
        self.registry = ConnectionRegistry(self.metrics)
        self.attestation = (
            AttestationResponder(
                source,
                self.metrics,
                rate=options.attestation_rate,
                burst=options.attestation_burst,
            )
            if source is not None
            else None
        )
        self.listener: TLSListener | None = None
        self.health: HealthServer | None = None
        self._engine: ProxyEngine | None = None
        self._asgi: object | None = None
        self.address: Address | None = None
        self.health_address: Address | None = None

    async def start(self) -> Address:
        """Bind everything; returns the TLS address actually bound."""
        mode = self.options.mode
        if mode == "asgi":
            from nitrotls.server.asgi import ASGIFront

            front = ASGIFront(self.options, self.holder, self.attestation, self.metrics)
            self._asgi = front
            self.address = await front.start()
        else:
            factory = self._factory(mode)
            self.listener = TLSListener(
                self.options.listen,
                self.holder,
                factory,
                self.registry,
                self.metrics,
                self.options.listener,
            )
            if self._engine is not None:
                self.listener.sweep_hooks.append(self._engine.pool.sweep)
            self.address = self.listener.start()
        if self.options.health is not None:
            self.health = HealthServer(self.options.health, self.holder, self.metrics)
            self.health_address = await self.health.start()
        self.metrics.serving = True
        log.info("serving TLS on %s (%s mode, %s)", self.address, mode, ENGINE.describe())
        if ENGINE.degraded:
            log.warning("the compiled build is not used (%s); serving interpreted", ENGINE.reason)
        return self.address

    def _factory(self, mode: Mode) -> ConnectionFactory:
        upstream = self.options.upstream
        assert upstream is not None
        if mode == "tcp":
            from nitrotls.server.raw import RawEngine

            raw = RawEngine(
                upstream.host,
                upstream.port,
                self.registry,
                self.attestation,
                self.options.proxy,
                self.metrics,
            )
            return raw.factory
        pool = UpstreamPool(
            upstream.host,
            upstream.port,
            max_idle=self.options.upstream_max_idle,
            idle_timeout=min(30.0, self.options.proxy.idle_timeout),
        )
        engine = ProxyEngine(
            settings=self.options.proxy,
            pool=pool,
            metrics=self.metrics,
            attestation=self.attestation,
            upstream_host=upstream.authority,
            registry=self.registry,
        )
        self._engine = engine
        return engine.factory

    async def wait(self) -> None:
        """Return when a one-shot server has served its session (else never)."""
        if self.listener is not None and self.holder.one_shot:
            await self.listener.one_shot_done.wait()
            await self.registry.wait_empty()
            return
        if self._asgi is not None:
            from nitrotls.server.asgi import ASGIFront

            assert isinstance(self._asgi, ASGIFront)
            await self._asgi.wait()
            return
        await asyncio.Event().wait()

    async def shutdown(self) -> None:
        """Graceful: stop accepting, let open requests finish (up to ``grace``), then close."""
        self.metrics.serving = False
        if self._engine is not None:
            self._engine.draining = True
        if self.listener is not None:
            await self.listener.shutdown(self.options.grace)
        if self._engine is not None:
            self._engine.pool.close_all()
            for task in list(self._engine.tasks):
                task.cancel()
        if self._asgi is not None:
            from nitrotls.server.asgi import ASGIFront

            assert isinstance(self._asgi, ASGIFront)
            await self._asgi.shutdown()
        if self.health is not None:
            await self.health.close()
