"""The server's own HTTP/1.1 reader over raw sockets: keep-alive, pipelining, 100-continue,
and a 4xx (then close) for every request shape it does not accept."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest

from nitrotls.kms.local import LocalKMSServer


def exchange(server: LocalKMSServer, data: bytes) -> bytes:
    """Send ``data``; read until the server closes the connection."""
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def signed_request(kit: Any, server: LocalKMSServer, extra: str = "") -> bytes:
    body = b"{}"
    headers = kit.sign(server.endpoint_url, "TrentService.ListKeys", body, kit.admin)
    host, port = server.address
    lines = [f"{name}: {value}" for name, value in headers.items()]
    head = "\r\n".join(["POST / HTTP/1.1", f"Host: {host}:{port}", *lines])
    return f"{head}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def statuses(raw: bytes) -> list[int]:
    """Status codes of the responses in ``raw`` (bodies are JSON, so never contain these)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def test_pipelined_keep_alive_requests(kit: Any, local_kms: LocalKMSServer) -> None:
    one = signed_request(kit, local_kms)
    raw = exchange(local_kms, one * 3)
    assert statuses(raw) == [200, 200, 200]
    assert raw.count(b'{"Keys": [], "Truncated": false}') == 3


def test_http10_and_connection_close_end_the_connection(
    kit: Any, local_kms: LocalKMSServer
) -> None:
    closing = signed_request(kit, local_kms, "Connection: close\r\n")
    raw = exchange(local_kms, closing + signed_request(kit, local_kms))
    assert statuses(raw) == [200]
    assert b"Connection: close" in raw
    old = signed_request(kit, local_kms).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    assert statuses(exchange(local_kms, old * 2)) == [200]


def test_expect_100_continue(kit: Any, local_kms: LocalKMSServer) -> None:
    raw = exchange(local_kms, signed_request(kit, local_kms, "Expect: 100-continue\r\n"))
    assert statuses(raw) == [100, 200]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /\r\n\r\n", 400),
        (b"POST / HTTP/2.0\r\nContent-Length: 0\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nBad Name: 1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400),
        (b"PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\n\r\n", 405),
    ],
    ids=[
        "short-request-line",
        "http2",
        "folded",
        "no-colon",
        "bad-name",
        "too-many-headers",
        "long-header",
        "no-length",
        "conflicting-length",
        "negative-length",
        "hex-length",
        "put",
        "get",
    ],
)
def test_malformed_requests_get_4xx_and_close(
    local_kms: LocalKMSServer, request_bytes: bytes, status: int
) -> None:
    raw = exchange(local_kms, request_bytes + b"POST / HTTP/1.1\r\n\r\n")
    assert statuses(raw) == [status]  # one answer: the connection closed after it
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["__type"]


def test_unsigned_request_is_refused(local_kms: LocalKMSServer) -> None:
    raw = exchange(
        local_kms,
        b"POST / HTTP/1.1\r\nX-Amz-Target: TrentService.ListKeys\r\n"
        b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}",
    )
    assert statuses(raw) == [400]
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["__type"] == (
        "MissingAuthenticationTokenException"
    )
