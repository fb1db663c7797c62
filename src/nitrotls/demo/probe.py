"""The demo's last stage: an attested client on the public address, then one real request.

``nitrotls.client.connect`` hands over the TLS connection only after the enclave's fresh
attestation (our nonce) binds the certificate this connection was shown, with the main image's
PCRs and the simulated NSM's dev root trusted; then a GET on that same connection shows the
upstream's answer travelled through the enclave.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from nitrotls.demo.errors import DemoError

MAX_RESPONSE = 64 * 1024
MAX_DOCUMENT_AGE = timedelta(minutes=5)


@dataclass(frozen=True)
class Proof:
    """What the attested connection established, and what the upstream said."""

    subject: str
    spki_sha384: str
    bundle_id: str
    module_id: str
    pcrs: dict[int, str]
    document_time: datetime
    nonce: str
    status_line: str
    body: str


def prove(url: str, main_pcrs: dict[int, bytes], ca_cert: Path, *, timeout: float) -> Proof:
    """Attest ``url`` against ``main_pcrs``; then GET / on the same connection."""
    from nitrotls.attestation import Policy
    from nitrotls.client import connect
    from nitrotls.demo.webapp import GREETING  # here, so `python -m` of the app stays clean
    from nitrotls.nsm import trusted_verifier

    policy = Policy(accepted_pcrs=(dict(main_pcrs),), max_age=MAX_DOCUMENT_AGE)
    verifier = trusted_verifier(True)
    with connect(url, policy, verifier=verifier, ca=str(ca_cert), timeout=timeout) as conn:
        verdict = conn.verdict
        status_line, body = _get(conn.socket, url, timeout)
    document = verdict.document
    if status_line.split(" ")[1:2] != ["200"] or GREETING not in body:
        raise DemoError(
            f"the attested connection answered {status_line!r} without the web app's "
            f"greeting {GREETING!r}"
        )
    return Proof(
        subject=verdict.leaf_subject,
        spki_sha384=verdict.spki_sha384.hex(),
        bundle_id=verdict.bundle_id.hex(),
        module_id=document.module_id,
        pcrs={i: document.pcrs[i].hex() for i in (0, 1, 2) if i in document.pcrs},
        document_time=datetime.fromtimestamp(document.timestamp_ms / 1000, UTC),
        nonce=verdict.nonce.hex() if verdict.nonce else "",
        status_line=status_line,
        body=body,
    )


def _get(sock: ssl.SSLSocket, url: str, timeout: float) -> tuple[str, str]:
    """``GET /`` with ``Connection: close``; the status line and the body (bounded)."""
    parts = urlsplit(url)
    request = (
        f"GET / HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: nitrotls-demo\r\n"
        "Accept: text/plain\r\nConnection: close\r\n\r\n"
    )
    deadline = time.monotonic() + timeout
    sock.sendall(request.encode("ascii"))
    received = bytearray()
    while len(received) <= MAX_RESPONSE:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DemoError(f"no complete answer from {url} within {timeout:g} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(16384)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        received += chunk
    head, separator, body = bytes(received).partition(b"\r\n\r\n")
    if not separator:
        raise DemoError(f"{url} sent no complete HTTP response ({len(received)} bytes)")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    return status_line, body.decode("utf-8", errors="replace")
