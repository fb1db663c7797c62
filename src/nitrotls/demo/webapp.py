"""The demo's upstream web app: the application the main enclave protects.

Run as ``python -m nitrotls.demo.webapp --listen 127.0.0.1:PORT``. It answers every GET with a
short text saying where it runs and what ``nitrotls serve`` told it about the client, and stops
cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

GREETING = "hello from inside the enclave"


class Handler(BaseHTTPRequestHandler):
    """GET and HEAD only; keep-alive with Content-Length, as a reverse proxy likes it."""

    protocol_version = "HTTP/1.1"
    server_version = "nitrotls-demo-app"
    # Headers and body leave in one write, and without Nagle's delay: otherwise a reverse proxy
    # waits ~40 ms per response for a delayed ACK.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, *, head: bool) -> None:
        forwarded = self.headers.get("X-Forwarded-For", "(not given)")
        proto = self.headers.get("X-Forwarded-Proto", "(not given)")
        body = (
            f"{GREETING}\n"
            f"path: {self.path}\n"
            f"client (X-Forwarded-For): {forwarded}\n"
            f"scheme (X-Forwarded-Proto): {proto}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"webapp: {self.address_string()} {format % args}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nitrotls-demo-webapp", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT")
    options = parser.parse_args(argv)
    host, _, port = options.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--listen must be HOST:PORT, not {options.listen!r}")
    try:
        server = ThreadingHTTPServer((host, int(port)), Handler)
    except OSError as error:
        sys.stderr.write(f"webapp: cannot listen on {options.listen}: {error.strerror}\n")
        return 1
    server.daemon_threads = True
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    thread = threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True)
    thread.start()
    sys.stderr.write(f"webapp: listening on http://{host}:{port}\n")
    sys.stderr.flush()
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
