"""The command lines the demo runs: the same ``nitrotls`` commands a user would type.

Kept in one place so the demo doubles as a worked example of every role's CLI contract.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

OUTBOUND_VSOCK = "vsock://3:8000"  # the parent instance is CID 3
MAIN_VSOCK = "vsock://16:443"  # the main enclave's TLS listener
DRAIN = "1"  # seconds the proxies let open connections finish when the demo stops


def nitrotls_command() -> tuple[str, ...]:
    """How to run ``nitrotls`` in a child: the console script beside this Python, else this
    Python itself."""
    beside = Path(sys.executable).parent / "nitrotls"
    if beside.is_file():
        return (str(beside),)
    # Not a PATH lookup: that could find another installation than the one running the demo.
    return (sys.executable, "-c", "from nitrotls.cli import main; main()")


@dataclass(frozen=True)
class Commands:
    """Builds argv lists; ``base`` is how ``nitrotls`` is invoked."""

    base: tuple[str, ...]

    def kms_serve(self, config: Path, port: int) -> list[str]:
        return [
            *self.base, "kms", "serve", "--config", str(config),
            "--listen", f"127.0.0.1:{port}", "--trust-dev-root",
        ]  # fmt: skip

    def outbound(self, allow: Path) -> list[str]:
        return [
            *self.base, "host", "outbound", "--listen", OUTBOUND_VSOCK,
            "--allow", str(allow), "--drain", DRAIN,
        ]  # fmt: skip

    def inbound(self, port: int) -> list[str]:
        """Public TCP → the main enclave's vsock, bytes only, with a PROXY v2 header first."""
        return [
            *self.base, "host", "inbound", "--listen", f"tcp://127.0.0.1:{port}",
            "--to", MAIN_VSOCK, "--proxy-protocol", "--drain", DRAIN,
        ]  # fmt: skip

    def acme_responder(self, store: str, port: int) -> list[str]:
        return [
            *self.base, "host", "acme-responder", "--store", store,
            "--listen", f"127.0.0.1:{port}",
        ]  # fmt: skip

    def forward(self, port: int, destination: str) -> list[str]:
        """``enclave forward``: a local port inside the enclave → host outbound → destination."""
        return [
            *self.base, "enclave", "forward", "--listen", f"tcp://127.0.0.1:{port}",
            "--to", OUTBOUND_VSOCK, "--preamble", destination, "--drain", DRAIN,
        ]  # fmt: skip

    def generator(
        self,
        image: Path,
        *,
        name: str,
        domain: str,
        ca: str,
        ca_bundle: Path | None,
        kms_endpoint: str,
        kms_key_id: str,
        store: str,
        main_pcrs: Path,
        force: bool,
    ) -> list[str]:
        argv = [
            *self.base, "--enclave", f"simulated:{image}", "generator", "run", "--once",
            "--log-json", "--name", name, "--domain", domain, "--ca", ca,
            "--kms-endpoint", kms_endpoint, "--kms-region", "us-east-1",
            "--kms-key-id", kms_key_id, "--store", store, "--main-pcrs", str(main_pcrs),
        ]  # fmt: skip
        if ca_bundle is not None:
            argv += ["--ca-bundle", str(ca_bundle)]
        if force:
            argv.append("--force")
        return argv

    def serve(
        self,
        image: Path,
        *,
        name: str,
        store: str,
        generator_pcrs: Path,
        ca_cert: Path,
        kms_endpoint: str,
        upstream_port: int,
        health_port: int,
    ) -> list[str]:
        return [
            *self.base, "--enclave", f"simulated:{image}", "serve",
            "--store", store, "--name", name, "--generator-pcrs", str(generator_pcrs),
            "--ca-cert", str(ca_cert), "--dev",
            "--kms-endpoint", kms_endpoint, "--kms-region", "us-east-1",
            "--listen", MAIN_VSOCK, "--proxy-protocol",
            "--upstream", f"http://127.0.0.1:{upstream_port}",
            "--health", f"tcp://127.0.0.1:{health_port}", "--grace", DRAIN,
        ]  # fmt: skip

    def webapp(self, port: int) -> list[str]:
        return [sys.executable, "-m", "nitrotls.demo.webapp", "--listen", f"127.0.0.1:{port}"]
