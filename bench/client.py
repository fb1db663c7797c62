"""Attested connect + one GET, beside a plain TLS connect + one GET to the same server.

Run: .venv/bin/python bench/client.py [--rounds 15] [--per-round 20]

One `nitrotls serve --upstream` process (simulated enclave, pinned to one core) fronts the demo's
web app; this process (pinned to the other core) alternates, in each round, three kinds of
operation against the same listener:
  plain  TLS handshake with certificate validation, GET /, read the answer, close;
  cold   nitrotls.client.connect() with a fresh Verifier (nothing cached: 4 chain signatures +
         the COSE signature), then the same GET;
  warm   connect() with one long-lived Verifier (the document's chain cached: the COSE signature
         and the per-connection leaf), then the same GET.
Each attested connection fetches a fresh attestation document with its own nonce; the server
signs it, so the server's cost of attesting is included. The server runs the insecure
bundled-certificate mode (the client passes allow_insecure_dev): the attestation exchange, the
document and every check are the same as with a bundle, and no KMS or CA is needed here.
Prints median milliseconds per operation and the ratios to plain. Goal (issue 6): warm <= 1.3x.
It also measures, in this process, the floor of what a fresh per-connection proof must add: one
ES384 signature (the enclave signs the document) and one ES384 verification (the client checks
it), and prints the best ratio any implementation could reach on this machine: (plain + floor) /
plain, before the extra round trip for the attestation request.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h11

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nitrotls.attestation import Policy, Verifier
from nitrotls.client import connect, tls_context
from nitrotls.nsm import measure_image, trusted_verifier

from certs import make_pki


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def get(sock: socket.socket) -> bytes:
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target="/", headers=[("Host", "localhost")])
    sock.sendall(conn.send(request) + conn.send(h11.EndOfMessage()))
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return body


@contextlib.contextmanager
def running_stack(workdir: Path) -> Iterator[tuple[int, str, Policy]]:
    """The web app and `nitrotls serve` in their own processes; yields (port, ca file, policy)."""
    pki = make_pki(workdir)
    image = workdir / "image"
    image.mkdir()
    (image / "app.py").write_text("print('bench')\n")
    app_port, tls_port = free_port(), free_port()
    config = workdir / "nitrotls.toml"  # the bench's own load must not trip the rate limit
    config.write_text("[server]\nattestation_rate = 100000.0\nattestation_burst = 100000\n")
    env = {**os.environ, "NITROTLS_HOME": str(workdir / "home"), "NITROTLS_VSOCK": "unix"}
    nitrotls = [sys.executable, "-m", "nitrotls"]
    server_cpu = ["taskset", "-c", "1"] if os.cpu_count() and os.cpu_count() > 1 else []  # type: ignore[operator]
    procs = [
        subprocess.Popen(
            [
                *server_cpu,
                sys.executable,
                "-m",
                "nitrotls.demo.webapp",
                "--listen",
                f"127.0.0.1:{app_port}",
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                *server_cpu,
                *nitrotls,
                "--enclave",
                f"simulated:{image}",
                "serve",
                "--config",
                str(config),
                "--listen",
                f"tcp://127.0.0.1:{tls_port}",
                "--upstream",
                f"http://127.0.0.1:{app_port}",
                "--insecure-bundled-cert",
                pki.cert_file,
                "--key",
                pki.key_file,
                "--log-level",
                "warning",
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        wait_for(app_port)
        wait_for(tls_port)
        os.environ["NITROTLS_HOME"] = env["NITROTLS_HOME"]  # the same dev root as the server
        yield tls_port, pki.ca_file, Policy(accepted_pcrs=(measure_image(image),))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def timed(operation: Callable[[], None], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=20)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp)) as (port, ca, policy):
        url = f"https://127.0.0.1:{port}"
        context = tls_context(ca)
        shared: Verifier = trusted_verifier(True)

        def plain() -> None:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as connect() does
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert get(tls)

        def attested(verifier_factory: Callable[[], Verifier]) -> Callable[[], None]:
            def run() -> None:
                with connect(
                    url, policy, verifier=verifier_factory(), ca=ca, allow_insecure_dev=True
                ) as conn:
                    assert get(conn.socket)

            return run

        operations = {
            "plain": plain,
            "cold": attested(lambda: trusted_verifier(True)),
            "warm": attested(lambda: shared),
        }
        for operation in operations.values():  # warm-up: imports, dev root, server caches
            timed(operation, 3)
        samples: dict[str, list[float]] = {name: [] for name in operations}
        for _ in range(args.rounds):
            for name, operation in operations.items():
                samples[name].append(statistics.median(timed(operation, args.per_round)))
    report(samples, args)


def es384_floor(count: int = 400) -> float:
    """Median seconds of one P-384 ECDSA sign + one verify over a document-sized message."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    message, algorithm = os.urandom(4500), ec.ECDSA(hashes.SHA384())
    signature = key.sign(message, algorithm)

    def both() -> None:
        key.sign(message, algorithm)
        key.public_key().verify(signature, message, algorithm)

    return statistics.median(timed(both, count))


def report(samples: dict[str, list[float]], args: argparse.Namespace) -> None:
    plain = statistics.median(samples["plain"])
    print(f"attested client vs plain TLS, {args.rounds} rounds x {args.per_round} ops, medians")
    print(f"{'operation':<10}{'ms/op':>10}{'ratio':>10}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:<10}{median * 1000:>10.2f}{median / plain:>10.2f}")
    floor = es384_floor()
    print(
        f"floor: ES384 sign + verify {floor * 1000:.2f} ms -> best possible warm ratio "
        f"{(plain + floor) / plain:.2f} (before the extra round trip)"
    )
    warm = statistics.median(samples["warm"]) / plain
    print(f"goal: warm <= 1.30 x plain -> {'met' if warm <= 1.3 else 'not met'} ({warm:.2f})")


if __name__ == "__main__":
    ssl.OPENSSL_VERSION  # noqa: B018 - fail early if ssl is unavailable
    main()
