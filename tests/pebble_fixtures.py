"""Launch Pebble (a test ACME CA) and pebble-challtestsrv (its fake DNS) on 127.0.0.1.

Reusable by any test package::

    from pebble_fixtures import PebbleStack, pebble_stack   # tests/ is on sys.path

    with pebble_stack(workdir, http_port=responder_port) as stack:
        ca = AcmeCA(stack.directory_url, key, ca_bundle=stack.ca_bundle, ...)
        roots = stack.root_pems()          # Pebble's issuing roots, to verify chains

Pebble validates HTTP-01 on ``http_port`` of whatever address challtestsrv answers for the
name (always 127.0.0.1 here), so point ``http_port`` at a running HTTP-01 responder. DNS-01
TXT records go through ``stack.set_txt(name, value)`` / ``stack.clear_txt(name)``.
Pebble's own TLS certificate is made here by a throwaway test CA (``stack.ca_bundle``).
Everything is bounded: startup waits at most ``STARTUP_TIMEOUT``; teardown kills what is left.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nitrotls.ca.local import _key_usage

STARTUP_TIMEOUT = 15.0
DEFAULT_ENV = {
    "PEBBLE_VA_NOSLEEP": "1",  # validate at once instead of sleeping up to 15 s
    "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce (a dedicated test turns it on)
    "PEBBLE_AUTHZREUSE": "0",  # every order proves control again
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1/localhost: (ca.pem, cert.pem, key.pem).

    Both carry what OpenSSL's strict verification asks for (key usages, key identifiers):
    Python 3.13's default client contexts turn it on and refuse the certificates otherwise."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nitrotls test Pebble TLS CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "tls-ca.pem", directory / "tls-cert.pem", directory / "tls-key.pem"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclass
class PebbleStack:
    """A running Pebble + challtestsrv pair and how to talk to them."""

    directory_url: str
    management_url: str
    ca_bundle: Path
    challtestsrv_url: str
    dns_port: int
    http_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def root_pems(self) -> list[bytes]:
        """Pebble's issuing root(s), fetched from its management interface (PEM each)."""
        with httpx.Client(verify=self._ssl(), timeout=5) as client:
            response = client.get(f"{self.management_url}/roots/0")
            response.raise_for_status()
            return [response.content]

    def root_certificates(self) -> list[x509.Certificate]:
        return [x509.load_pem_x509_certificate(pem) for pem in self.root_pems()]

    def set_txt(self, host: str, value: str) -> None:
        """Add a TXT record (``host`` like ``_acme-challenge.example.test``)."""
        self._challtestsrv("set-txt", {"host": _fqdn(host), "value": value})

    def clear_txt(self, host: str) -> None:
        self._challtestsrv("clear-txt", {"host": _fqdn(host)})

    def _challtestsrv(self, endpoint: str, body: Mapping[str, str]) -> None:
        with httpx.Client(timeout=5) as client:
            response = client.post(f"{self.challtestsrv_url}/{endpoint}", json=dict(body))
            response.raise_for_status()

    def log_tail(self, limit: int = 3000) -> str:
        text = ""
        for path in self.logs:
            with contextlib.suppress(OSError):
                text += f"--- {path.name}\n" + path.read_text(errors="replace")[-limit:]
        return text

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _fqdn(host: str) -> str:
    return host if host.endswith(".") else host + "."


def _spawn(argv: Sequence[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            list(argv),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )


def _wait_tcp(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {STARTUP_TIMEOUT} s")


def _wait_directory(stack: PebbleStack, deadline: float) -> None:
    with httpx.Client(verify=stack._ssl(), timeout=1) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(stack.directory_url).status_code == 200:
                    return
            time.sleep(0.02)
    raise RuntimeError(f"Pebble directory {stack.directory_url} not ready")


@contextlib.contextmanager
def pebble_stack(
    workdir: Path,
    *,
    http_port: int,
    env: Mapping[str, str] | None = None,
    domain_blocklist: Sequence[str] = (),
    eab_keys: Mapping[str, str] | None = None,
) -> Iterator[PebbleStack]:
    """Start challtestsrv, then Pebble using it for DNS; stop both on exit.

    ``eab_keys`` (kid → base64url HMAC key) makes external account binding required.
    """
    pebble = shutil.which("pebble")
    challtestsrv = shutil.which("pebble-challtestsrv")
    if not pebble or not challtestsrv:
        raise RuntimeError("pebble and pebble-challtestsrv must be installed")
    workdir.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = make_tls_files(workdir)
    acme_port, mgmt_port, dns_port, cts_port = (free_port() for _ in range(4))
    config: dict[str, object] = {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(cert_pem),
        "privateKey": str(key_pem),
        "httpPort": http_port,
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": bool(eab_keys),
        "externalAccountMACKeys": dict(eab_keys or {}),
        "domainBlocklist": list(domain_blocklist),
    }
    config_path = workdir / "pebble-config.json"
    config_path.write_text(json.dumps({"pebble": config}, indent=2))
    stack = PebbleStack(
        directory_url=f"https://127.0.0.1:{acme_port}/dir",
        management_url=f"https://127.0.0.1:{mgmt_port}",
        ca_bundle=ca_pem,
        challtestsrv_url=f"http://127.0.0.1:{cts_port}",
        dns_port=dns_port,
        http_port=http_port,
        logs=[workdir / "challtestsrv.log", workdir / "pebble.log"],
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        cts = _spawn(
            [
                challtestsrv,
                "-dns01", f"127.0.0.1:{dns_port}",
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-management", f"127.0.0.1:{cts_port}",
                "-defaultIPv4", "127.0.0.1",
                "-defaultIPv6", "",
            ],
            stack.logs[0],
            {},
        )  # fmt: skip
        stack.processes.append(cts)
        _wait_tcp(cts_port, cts, deadline)
        peb = _spawn(
            [pebble, "-config", str(config_path), "-dnsserver", f"127.0.0.1:{dns_port}"],
            stack.logs[1],
            {**DEFAULT_ENV, **(env or {})},
        )
        stack.processes.append(peb)
        _wait_tcp(acme_port, peb, deadline)
        _wait_directory(stack, deadline)
    except BaseException as error:
        stack.stop()
        raise RuntimeError(f"Pebble did not start: {error}\n{stack.log_tail()}") from error
    try:
        yield stack
    finally:
        stack.stop()
