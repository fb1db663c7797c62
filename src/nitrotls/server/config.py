"""The ``[server]`` section of ``nitrotls.toml``: what ``nitrotls serve`` reads.

Store and KMS come from their own sections (``[store]``, ``[kms]``); this one says what to serve
and how. Command-line options override each field (``nitrotls.config.override``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from nitrotls.config import ConfigError, Section


@dataclass(frozen=True)
class ServerSection(Section):
    """The main enclave's serving settings."""

    name: ClassVar[str] = "server"

    listen: str = "tcp://127.0.0.1:8443"  # tcp://HOST:PORT, unix:///PATH or vsock://CID:PORT
    upstream: str | None = None  # http://HOST:PORT (reverse proxy) or tcp://HOST:PORT (raw)
    app: str | None = None  # module:attr of an ASGI app served in-process
    bundle: str | None = None  # the bundle name in the store
    generator_pcrs: tuple[Path, ...] = ()  # accepted generator images (PCR files)
    ca_roots: tuple[Path, ...] = ()  # CA roots the chain must lead to (default: not checked)
    names: tuple[str, ...] = ()  # names the certificate must cover (default: all it names)
    trust_dev_root: bool = False  # accept simulated-NSM documents (development)
    health: str | None = None  # e.g. tcp://127.0.0.1:9901 for /healthz, /readyz, /metrics
    proxy_protocol: bool = False  # expect PROXY v2 from the host's inbound proxy
    max_connections: int = 4096
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    body_timeout: float = 30.0
    upstream_timeout: float = 60.0
    grace: float = 30.0  # graceful shutdown: how long open requests may finish
    reload_interval: float = 300.0  # store poll interval, seconds (jittered)
    reload_jitter: float = 0.1
    attestation_rate: float = 5.0  # documents per second per client address
    attestation_burst: int = 20
    start_attempts: int = 6  # attempts to reach store and KMS at start-up
    start_backoff_max: float = 30.0
    min_seq: int = 0  # refuse bundles below this sequence number
    raw_alpn: tuple[str, ...] = ()  # extra ALPN values offered in tcp:// mode (e.g. h2)
    one_shot: bool = False

    def validate(self) -> None:
        if self.upstream is not None and self.app is not None:
            raise ConfigError("[server] give upstream or app, not both")
        for label, value in (
            ("handshake_timeout", self.handshake_timeout),
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_timeout", self.body_timeout),
            ("upstream_timeout", self.upstream_timeout),
            ("reload_interval", self.reload_interval),
            ("attestation_rate", self.attestation_rate),
            ("start_backoff_max", self.start_backoff_max),
        ):
            if not 0 < value < math.inf:  # also refuses nan
                raise ConfigError(f"[server] {label} must be a positive number, found {value}")
        if not 0 <= self.grace < math.inf:
            raise ConfigError(f"[server] grace must be a number >= 0, found {self.grace}")
        if not 0 <= self.reload_jitter < 1:
            raise ConfigError(
                f"[server] reload_jitter must be in [0, 1), found {self.reload_jitter}"
            )
        if self.max_connections < 1 or self.attestation_burst < 1 or self.start_attempts < 1:
            raise ConfigError(
                "[server] max_connections, attestation_burst and start_attempts must be >= 1"
            )
        if self.min_seq < 0:
            raise ConfigError("[server] min_seq must not be negative")
        for protocol in self.raw_alpn:  # an ALPN protocol name: 1-255 bytes (RFC 7301)
            if not 1 <= len(protocol.encode("utf-8")) <= 255:
                raise ConfigError(
                    f"[server] raw_alpn values must be 1-255 bytes, found {protocol!r}"
                )
