"""sslyze against a running server: Mozilla "intermediate" per sslyze's own checker, no SSL 3,
TLS 1.0 or 1.1, no insecure renegotiation, no compression."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nitrotls.server.identity import ContextHolder
from nitrotls.server.runtime import ServeOptions, TLSServer, Upstream
from nitrotls.transport.address import Address

from .conftest import PKI, served_from

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]
sslyze = pytest.importorskip("sslyze")


@contextmanager
def server_in_thread(holder: ContextHolder) -> Iterator[int]:
    """A proxy-mode server on its own event loop (sslyze's scanner blocks this thread)."""
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    port: list[int] = []

    async def main() -> None:
        options = ServeOptions(
            listen=Address.parse("tcp://127.0.0.1:0"), upstream=Upstream.parse("http://127.0.0.1:9")
        )
        server = TLSServer(options, holder, None)
        address = await server.start()
        port.append(address.port)
        stop.append(asyncio.Event())
        ready.set()
        await stop[0].wait()
        await server.shutdown()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)


def test_mozilla_intermediate_compliance(pki: PKI) -> None:
    from sslyze import (
        CertificateInfoExtraArgument,
        ScanCommandsExtraArguments,
        Scanner,
        ServerNetworkLocation,
        ServerScanRequest,
    )
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        MozillaTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )

    holder = ContextHolder(served_from(pki.issue()))
    with server_in_thread(holder) as port:
        request = ServerScanRequest(
            server_location=ServerNetworkLocation("localhost", port, ip_address="127.0.0.1"),
            scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
            scan_commands_extra_arguments=ScanCommandsExtraArguments(
                certificate_info=CertificateInfoExtraArgument(custom_ca_file=pki.root_pem)
            ),
        )
        scanner = Scanner()
        scanner.queue_scans([request])
        (result,) = list(scanner.get_results())
    scan = result.scan_result
    assert scan is not None, result.connectivity_error_trace
    for attempt in ("ssl_3_0_cipher_suites", "tls_1_0_cipher_suites", "tls_1_1_cipher_suites"):
        assert not getattr(scan, attempt).result.is_tls_version_supported, attempt
    assert scan.tls_1_2_cipher_suites.result.is_tls_version_supported
    assert scan.tls_1_3_cipher_suites.result.is_tls_version_supported
    assert not scan.tls_compression.result.supports_compression
    renegotiation = scan.session_renegotiation.result
    assert renegotiation.supports_secure_renegotiation
    assert not renegotiation.is_vulnerable_to_client_renegotiation_dos
    curves = {c.name for c in scan.elliptic_curves.result.supported_curves or []}
    assert curves == {"X25519", "secp256r1", "secp384r1"}
    check_server_against_tls_configuration(
        result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    )
