"""nitrotls serve --upstream against nginx as TLS-terminating reverse proxies, in one run.

Both proxies get the same certificate (P-256), the same upstream (a static nginx), one worker,
TLS 1.2 + 1.3, no session cache and no tickets (nginx also ``NumTickets 0``: otherwise it still
sends two TLS 1.3 tickets nobody can redeem; a check at start warns if either server sends any),
and are pinned to one core; the load generator and the upstream share the other core. Measured,
interleaved over several rounds:

* new TLS connections per second of server CPU: ``h2load --h1`` with ``Connection: close``
  (one request per connection, no resumption), server CPU from /proc;
* keep-alive requests per second: ``wrk`` (and per second of server CPU).

TLS 1.2 runs restrict the *clients* through an OpenSSL config (MaxProtocol = TLSv1.2), so both
servers keep their production configuration. Prints medians, their nitrotls/nginx ratio and the
median of the per-round ratios (both servers run back to back in every round, so that one is
less disturbed by other work on the machine); asserts nothing. Needs Linux, nginx, h2load
(nghttp2-client), wrk and taskset.

    .venv/bin/python bench/tls.py [--rounds 3] [--seconds 4] [--connections 4000]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import nitrotls.server as server
from nitrotls.server import native

SERVER_CORE = "0"
CLIENT_CORE = "1"
BODY = "hello from the upstream\n"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for localhost (the benchmark's only identity)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def nginx_conf(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.conf"
    path.write_text(
        "worker_processes 1;\ndaemon off;\nmaster_process on;\n"
        f"pid {directory}/{name}.pid;\nerror_log {directory}/{name}-error.log;\n"
        "events { worker_connections 8192; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {directory}/{name}-body;\n"
        f"  proxy_temp_path {directory}/{name}-proxy;\n  fastcgi_temp_path {directory}/fcgi;\n"
        f"  uwsgi_temp_path {directory}/uwsgi;\n  scgi_temp_path {directory}/scgi;\n"
        f"  keepalive_requests 10000000;\n{body}}}\n"
    )
    return path


def upstream_body(port: int) -> str:
    return (
        f"  server {{\n    listen 127.0.0.1:{port};\n"
        f'    location / {{ return 200 "{BODY.strip()}\\n"; }}\n  }}\n'
    )


def proxy_body(port: int, upstream: int, cert: Path, key: Path) -> str:
    # With tickets and the cache off, nginx still has OpenSSL send two TLS 1.3 tickets (nobody
    # can redeem them); NumTickets 0 stops that, so both servers do the same TLS work.
    return (
        "  ssl_session_cache off;\n  ssl_session_tickets off;\n  ssl_conf_command NumTickets 0;\n"
        f"  upstream app {{ server 127.0.0.1:{upstream}; keepalive 256; }}\n"
        f"  server {{\n    listen 127.0.0.1:{port} ssl;\n"
        f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
        "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        "    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;\n"
        "    location / {\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n      proxy_set_header Host $host;\n'
        "      proxy_set_header X-Forwarded-For $remote_addr;\n"
        "      proxy_set_header X-Forwarded-Proto https;\n"
        "      proxy_set_header X-Forwarded-Host $host;\n    }\n  }\n"
    )


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited early ({process.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


@contextmanager
def started(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def worker_pids(process: subprocess.Popen[bytes], nginx: bool) -> list[int]:
    if not nginx:
        return [process.pid]
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return [int(pid) for pid in children]


@dataclass
class Target:
    name: str
    port: int
    pids: list[int]


def client_env(tls: str, directory: Path) -> dict[str, str]:
    env = dict(os.environ)
    if tls == "1.2":
        conf = directory / "tls12.cnf"
        conf.write_text(
            "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n"
            "[ssl_sect]\nsystem_default = system_default_sect\n"
            "[system_default_sect]\nMaxProtocol = TLSv1.2\nCipherString = DEFAULT\n"
        )
        env["OPENSSL_CONF"] = str(conf)
    return env


def new_connections(
    target: Target, tls: str, count: int, seconds: int, directory: Path
) -> tuple[float, float]:
    """(connections per server CPU second, connections per wall second).

    TLS 1.3: h2load --h1 with Connection: close. h2load pins its own protocol range, so for
    TLS 1.2 the same load comes from wrk with Connection: close, capped by an OpenSSL config.
    """
    if tls == "1.2":
        return _wrk_new_connections(target, seconds, directory)
    before = cpu_seconds(target.pids)
    started_at = time.monotonic()
    result = subprocess.run(
        ["taskset", "-c", CLIENT_CORE, "h2load", "--h1", "-n", str(count), "-c", "32",
         "-H", "Connection: close", f"https://localhost:{target.port}/"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.monotonic() - started_at
    used = cpu_seconds(target.pids) - before
    done = re.search(r"(\d+) succeeded", result.stdout)
    protocol = re.search(r"TLS Protocol: (\S+)", result.stdout)
    if not done or int(done[1]) != count or not protocol or protocol[1] != "TLSv1.3":
        raise SystemExit(f"h2load against {target.name} failed:\n{result.stdout}{result.stderr}")
    return count / max(used, 1e-9), count / wall


def _wrk_new_connections(target: Target, seconds: int, directory: Path) -> tuple[float, float]:
    before = cpu_seconds(target.pids)
    result = subprocess.run(
        ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", "-c32", f"-d{seconds}s",
         "-H", "Connection: close", f"https://localhost:{target.port}/"],
        capture_output=True, text=True, env=client_env("1.2", directory), check=False,
    )  # fmt: skip
    used = cpu_seconds(target.pids) - before
    total = re.search(r"(\d+) requests in ([\d.]+)s", result.stdout)
    if not total or "Non-2xx" in result.stdout:
        raise SystemExit(f"wrk against {target.name} failed:\n{result.stdout}{result.stderr}")
    return int(total[1]) / max(used, 1e-9), int(total[1]) / float(total[2])


def keep_alive(target: Target, tls: str, seconds: int, directory: Path) -> tuple[float, float]:
    """(requests per second, requests per server CPU second)."""
    before = cpu_seconds(target.pids)
    result = subprocess.run(
        ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", "-c32", f"-d{seconds}s",
         f"https://localhost:{target.port}/"],
        capture_output=True, text=True, env=client_env(tls, directory), check=False,
    )  # fmt: skip
    used = cpu_seconds(target.pids) - before
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    total = re.search(r"(\d+) requests in", result.stdout)
    if not rate or not total or "Non-2xx" in result.stdout:
        raise SystemExit(f"wrk against {target.name} failed:\n{result.stdout}{result.stderr}")
    return float(rate[1]), int(total[1]) / max(used, 1e-9)


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (make bench-deps installs them)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs at least two cores (servers and load generator apart)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4, help="wrk duration per run")
    parser.add_argument("--connections", type=int, default=4000, help="h2load connections")
    parser.add_argument(
        "--interpreted", action="store_true",
        help="also run nitrotls on its interpreted sources (NITROTLS_PURE_PYTHON=1)",
    )  # fmt: skip
    args = parser.parse_args()
    require("nginx", "h2load", "wrk", "taskset")
    with tempfile.TemporaryDirectory(prefix="nitrotls-bench-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        cert, key = make_certificate(directory)
        image = directory / "image"
        image.mkdir()
        (image / "app.py").write_text("bench\n")
        up_port, nginx_port = free_port(), free_port()
        upstream_conf = nginx_conf(directory, "upstream", upstream_body(up_port))
        stack.enter_context(
            started(["taskset", "-c", CLIENT_CORE, "nginx", "-c", str(upstream_conf)], up_port,
                    directory / "upstream.log")
        )  # fmt: skip
        proxy_conf = nginx_conf(directory, "proxy", proxy_body(nginx_port, up_port, cert, key))
        nginx = stack.enter_context(
            started(["taskset", "-c", SERVER_CORE, "nginx", "-c", str(proxy_conf)], nginx_port,
                    directory / "nginx.log")
        )  # fmt: skip
        targets = [Target("nginx", nginx_port, worker_pids(nginx, nginx=True))]
        engines = [("nitrotls", False)] + ([("nitrotls-py", True)] if args.interpreted else [])
        for name, pure in engines:
            port = free_port()
            nitro = start_nitrotls(directory, name, image, port, up_port, cert, key, pure)
            stack.callback(_stop, nitro)
            wait_port(port, nitro)
            targets.append(Target(name, port, worker_pids(nitro, nginx=False)))
        print(f"nitrotls: {server.ENGINE.reason}", file=sys.stderr)
        run(targets, args, directory)


def start_nitrotls(
    directory: Path,
    name: str,
    image: Path,
    port: int,
    up_port: int,
    cert: Path,
    key: Path,
    pure: bool,
) -> subprocess.Popen[bytes]:
    """``nitrotls serve --upstream`` on the server core; ``pure``: on its interpreted sources."""
    env = {**os.environ, "NITROTLS_HOME": str(directory / f"home-{name}")}
    env.pop(native.PURE_ENV, None)
    if pure:
        env[native.PURE_ENV] = "1"
    argv = [
        "taskset", "-c", SERVER_CORE, sys.executable, "-c",
        "from nitrotls.cli import main; main()", "--enclave", f"simulated:{image}",
        "serve", "--listen", f"tcp://127.0.0.1:{port}",
        "--upstream", f"http://127.0.0.1:{up_port}",
        "--insecure-bundled-cert", str(cert), "--key", str(key), "--log-level", "warning",
    ]  # fmt: skip
    with (directory / f"{name}.log").open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def tickets_sent(port: int) -> bool:
    """Whether a TLS 1.3 server hands out session tickets (neither should: no resumption)."""
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        client.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(ssl.SSLEOFError, ConnectionResetError):
            while tls.recv(65536):  # tickets arrive after the handshake, with the data
                pass
        session = tls.session
    return session is not None and session.has_ticket


Results = dict[tuple[str, str, str], list[float]]


def run(targets: list[Target], args: argparse.Namespace, directory: Path) -> None:
    for target in targets:
        if tickets_sent(target.port):
            print(f"warning: {target.name} sends TLS session tickets", file=sys.stderr)
    results: Results = {}
    for target in targets:  # warm up both (imports, pools, caches)
        new_connections(target, "1.3", 500, 1, directory)
        keep_alive(target, "1.3", 1, directory)
    for round_number in range(args.rounds):
        for tls in ("1.3", "1.2"):
            for target in targets if round_number % 2 == 0 else reversed(targets):
                per_cpu, per_wall = new_connections(
                    target, tls, args.connections, args.seconds, directory
                )
                rate, per_cpu_ka = keep_alive(target, tls, args.seconds, directory)
                for metric, value in (
                    ("new conns / server CPU s", per_cpu),
                    ("new conns / s (wall)", per_wall),
                    ("keep-alive req / s", rate),
                    ("keep-alive req / server CPU s", per_cpu_ka),
                ):
                    results.setdefault((tls, metric, target.name), []).append(value)
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    for target in targets[1:]:
        report(results, args.rounds, target.name)


def report(results: Results, rounds: int, name: str) -> None:
    """Medians, their ratio, and the median of the per-round ratios ("paired"): both servers
    run in every round, back to back, so a paired ratio cancels load that drifts between
    rounds (other work on the machine) better than a ratio of medians does. The lowest and
    highest per-round ratio show how far one round can stray: a goal met by the median alone
    has no margin."""
    print(f"\n{name} serve --upstream vs nginx (TLS reverse proxy), medians of {rounds} rounds")
    print(f"{'TLS':<5}{'metric':<32}{'nginx':>10}{name:>12}{'ratio':>8}{'paired':>8}{'rounds':>12}")
    metrics = sorted(
        {(tls, metric) for tls, metric, _ in results}, key=lambda m: (-float(m[0]), m[1])
    )
    for tls, metric in metrics:
        nginx = results[(tls, metric, "nginx")]
        nitro = results[(tls, metric, name)]
        ratios = [a / b for a, b in zip(nitro, nginx, strict=True)]
        paired = statistics.median(ratios)
        n, m = statistics.median(nginx), statistics.median(nitro)
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        print(f"{tls:<5}{metric:<32}{n:>10.0f}{m:>12.0f}{m / n:>8.2f}{paired:>8.2f}{spread:>12}")
    print("\ngoals: new conns / server CPU s >= 0.90 x nginx; keep-alive req / s >= 0.80 x nginx")


if __name__ == "__main__":
    main()
