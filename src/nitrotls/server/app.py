"""``nitrotls serve`` as a library call: load, serve, reload, shut down gracefully.

The CLI parses options into a :class:`~nitrotls.server.config.ServerSection` and calls
:func:`run`; everything that can fail raises a typed :class:`~nitrotls.errors.NitroTLSError`
whose exit code tells configuration errors (2), refused bundles (65), unreachable KMS or store
at start (75) and listen failures (71) apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nitrotls.errors import NitroTLSError
from nitrotls.nsm.source import AttestationSource
from nitrotls.server.config import ServerSection
from nitrotls.server.errors import ServerConfigError
from nitrotls.server.health import HEALTH_SCHEMES
from nitrotls.server.identity import ContextHolder, Served
from nitrotls.server.listener import ListenSettings
from nitrotls.server.loader import (
    BundleLoader,
    BundleSource,
    Reloader,
    Retry,
    load_at_start,
    load_insecure,
    note_served,
)
from nitrotls.server.metrics import Metrics
from nitrotls.server.proxy import ProxySettings
from nitrotls.server.runtime import ServeOptions, TLSServer, Upstream
from nitrotls.transport.address import Address

log = logging.getLogger(__name__)

INSECURE_BANNER = (
    "INSECURE DEVELOPMENT MODE: serving certificate files baked into the image. Anyone who has "
    "the image has the private key. Attestation documents say 'nitrotls/tls-insecure/1' and "
    "clients refuse them unless told otherwise. Never use this in production."
)


@dataclass(frozen=True)
class Backends:
    """Where bundles come from (``None`` in insecure mode)."""

    store_spec: str | None = None
    kms_endpoint: str | None = None
    kms_region: str = "us-east-1"


# serve's KMS calls give up sooner than the client's defaults (5 attempts, 30 s reads): start-up
# and every reload poll already retry around them, so a KMS (or vsock proxy) that accepts and
# never answers costs at most 2 x 10 s per try — with the default 6 start attempts a few
# minutes before exit 75, not a quarter of an hour. A Decrypt normally answers in milliseconds.
SERVE_KMS_ATTEMPTS = 2
SERVE_KMS_READ_TIMEOUT = 10.0


def serve_options(section: ServerSection) -> ServeOptions:
    """The runtime options of a ``[server]`` section (addresses parsed, modes checked).

    Everything here is decided from the configuration alone, so :func:`run` calls it before it
    touches the store or KMS: a typo must not cost minutes of start-up retries first."""
    try:
        listen = Address.parse(section.listen)
        health = Address.parse(section.health) if section.health else None
    except NitroTLSError as error:
        raise ServerConfigError(str(error)) from None
    _check_vsock(listen, section.listen)
    if health is not None and health.scheme not in HEALTH_SCHEMES:
        raise ServerConfigError(
            f"--health {section.health}: health is served locally, on tcp:// or unix:// only"
        )
    return ServeOptions(
        listen=listen,
        upstream=Upstream.parse(section.upstream) if section.upstream else None,
        app=section.app,
        proxy=ProxySettings(
            header_timeout=section.header_timeout,
            idle_timeout=section.idle_timeout,
            body_timeout=section.body_timeout,
            upstream_timeout=section.upstream_timeout,
        ),
        listener=ListenSettings(
            max_connections=section.max_connections,
            handshake_timeout=section.handshake_timeout,
            proxy_protocol=section.proxy_protocol,
        ),
        health=health,
        attestation_rate=section.attestation_rate,
        attestation_burst=section.attestation_burst,
        grace=section.grace,
        raw_alpn=section.raw_alpn,
    )


def _check_vsock(listen: Address, text: str) -> None:
    """How ``vsock://`` is reached ($NITROTLS_VSOCK, or an enclave's devices) is configuration:
    decide it now (no socket is opened), not at bind time after the bundle is loaded."""
    if listen.scheme != "vsock":
        return
    from nitrotls.transport.sockets import socket_path

    try:
        socket_path(listen)
    except NitroTLSError as error:
        raise ServerConfigError(f"--listen {text}: {error}") from None


def bundle_source(
    section: ServerSection, backends: Backends, enclave: AttestationSource, alpn: tuple[str, ...]
) -> BundleSource:
    """Store, KMS, verifier and generator policy for bundle mode.

    The store is opened read-only (a serving enclave never creates or writes it) and first, so a
    store path that cannot work is a configuration error before anything else is read."""
    from nitrotls.attestation import Policy, load_pcrs_file
    from nitrotls.kms.client import KMSClient
    from nitrotls.nsm import trusted_verifier
    from nitrotls.store import open_store

    if not section.bundle:
        raise ServerConfigError("bundle mode needs the bundle name (--name or [server] bundle)")
    if not section.generator_pcrs:
        raise ServerConfigError(
            "bundle mode needs at least one accepted generator image (--generator-pcrs FILE): "
            "without it any enclave could have made the bundle"
        )
    store = open_store(backends.store_spec, read_only=True)
    policy = Policy(accepted_pcrs=tuple(load_pcrs_file(p) for p in section.generator_pcrs))
    roots = tuple(_read_certificate(p) for p in section.ca_roots) or None
    try:
        kms = KMSClient(
            endpoint_url=backends.kms_endpoint,
            region_name=backends.kms_region,
            max_attempts=SERVE_KMS_ATTEMPTS,
            read_timeout=SERVE_KMS_READ_TIMEOUT,
        )
    except ValueError as error:  # botocore: "Invalid endpoint: ..."
        raise ServerConfigError(f"--kms-endpoint {backends.kms_endpoint}: {error}") from None
    return BundleSource(
        store=store,
        name=section.bundle,
        verifier=trusted_verifier(section.trust_dev_root),
        generator_policy=policy,
        kms=kms,
        enclave=enclave,
        names=section.names or None,
        ca_roots=roots,
        alpn=alpn,
    )


def _read_certificate(path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ServerConfigError(f"cannot read CA root {path}: {error.strerror}") from None
    try:
        cert = (
            x509.load_pem_x509_certificate(raw)
            if b"-----BEGIN" in raw
            else x509.load_der_x509_certificate(raw)
        )
    except ValueError:
        raise ServerConfigError(f"{path} is not a PEM or DER certificate") from None
    return cert.public_bytes(serialization.Encoding.DER)


def run(
    section: ServerSection,
    *,
    enclave: AttestationSource,
    backends: Backends | None = None,
    insecure: tuple[Path, Path] | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or, with ``one_shot``, until the one session ends)."""
    options = serve_options(section)
    metrics = Metrics()
    loader: BundleLoader | None = None
    if insecure is not None:
        log.warning(INSECURE_BANNER)
        served: Served | None = load_insecure(*insecure, alpn=options.alpn)
    else:
        source = bundle_source(section, backends or Backends(), enclave, options.alpn)
        loader = BundleLoader(source, metrics, min_seq=section.min_seq)
        retry = Retry(attempts=section.start_attempts, maximum=section.start_backoff_max)
        served = load_at_start(loader, retry)
    assert served is not None
    note_served(metrics, served)
    holder = ContextHolder(served, one_shot=section.one_shot)
    served = None  # the holder is the only owner: --one-shot can drop the key
    reloader = (
        Reloader(
            loader, holder, metrics, interval=section.reload_interval, jitter=section.reload_jitter
        )
        if loader is not None and not section.one_shot
        else None
    )
    uvloop_ok = not _real_vsock(options.listen)
    serving = _serve(options, holder, enclave, metrics, reloader, insecure is not None, on_ready)
    _run_loop(serving, uvloop_ok=uvloop_ok)


def _real_vsock(address: Address) -> bool:
    """Whether ``address`` means an AF_VSOCK socket (not the development Unix mapping)."""
    from nitrotls.transport.sockets import socket_path

    return address.scheme == "vsock" and socket_path(address) is None


def _run_loop(coro: Any, *, uvloop_ok: bool = True) -> None:
    """uvloop when it can serve the listener: it hands only TCP and Unix sockets to TLS
    (``connect_accepted_socket`` refuses AF_VSOCK), so real vsock runs on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        uvloop_ok = False
    if not uvloop_ok:
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _serve(
    options: ServeOptions,
    holder: ContextHolder,
    enclave: AttestationSource,
    metrics: Metrics,
    reloader: Reloader | None,
    insecure: bool,
    on_ready: Callable[[dict[str, Any]], None] | None,
) -> None:
    server = TLSServer(options, holder, enclave, metrics)
    address = await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    current = holder.current()
    if on_ready is not None and current is not None:
        on_ready(
            {
                "listen": str(address),
                "health": str(server.health_address) if server.health_address else None,
                "mode": options.mode,
                "seq": current.identity.seq,
                "bundle_id": current.identity.bundle_id.hex(),
                "not_after": current.identity.not_after.isoformat(),
                "insecure": insecure,
            }
        )
    tasks = [asyncio.create_task(stop.wait()), asyncio.create_task(server.wait())]
    if reloader is not None:
        tasks.append(asyncio.create_task(reloader.run()))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("shutting down: letting open requests finish (up to %.0fs)", options.grace)
        for task in tasks:
            task.cancel()
        await server.shutdown()
