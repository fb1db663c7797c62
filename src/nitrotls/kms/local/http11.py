"""The little HTTP/1.1 the KMS protocol needs, read strictly and cheaply.

``http.server`` parses headers with the email package, which costs more per request than
everything else the server does outside cryptography. KMS clients send one shape of request
(``POST /``, a dozen headers, a Content-Length body), so this module reads exactly that:
bounded lines, bounded header count, no folded headers, no chunked bodies, one Content-Length.
Anything else is answered with a 4xx and the connection closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

MAX_LINE = 8192
MAX_HEADERS = 100
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")


class LineReader(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class HTTPRequestError(Exception):
    """A request this server will not read further; answered with ``status`` and closed."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ","

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.1":
            return "close" not in connection
        return "keep-alive" in connection


def _bad(message: str, status: int = 400) -> HTTPRequestError:
    return HTTPRequestError(status, "ValidationException", message)


def _line(rfile: LineReader) -> bytes | None:
    line = rfile.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE:
        raise _bad(f"A request line or header is longer than {MAX_LINE} bytes.", 431)
    if not line.endswith(b"\n"):
        raise _bad("The connection closed in the middle of a line.")
    return line


def read_head(rfile: LineReader) -> RequestHead | None:
    """The next request's line and headers; None when the client closed between requests."""
    line = _line(rfile)
    if line in (b"\r\n", b"\n"):  # RFC 9112 §2.2: ignore an empty line before a request
        line = _line(rfile)
    if line is None:
        return None
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]):
        raise _bad("The request line must be METHOD SP TARGET SP HTTP-VERSION.")
    method, target, version = (part.decode("latin-1") for part in parts)
    if version not in _VERSIONS:
        raise _bad(f"HTTP version {version!r} is not supported.", 505)
    return RequestHead(method, target, version, _headers(rfile))


def _headers(rfile: LineReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(rfile)
        if line is None:
            raise _bad("The connection closed inside the request headers.")
        if line in (b"\r\n", b"\n"):
            return headers
        if line[:1] in (b" ", b"\t"):
            raise _bad("Folded (multi-line) headers are not accepted.")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise _bad("A header line must be NAME: VALUE.")
        key = name.decode("ascii").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    raise _bad(f"More than {MAX_HEADERS} headers.", 431)


def content_length(head: RequestHead, limit: int) -> int:
    """The body length, refusing chunked bodies, missing or conflicting lengths, and excess."""
    if "transfer-encoding" in head.headers:
        raise _bad("Send the body with Content-Length; Transfer-Encoding is not accepted.", 411)
    raw = head.headers.get("content-length")
    if raw is None:
        raise _bad("A request needs a Content-Length header.", 411)
    values = {value.strip() for value in raw.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise _bad("Content-Length must be one decimal number.")
    length = int(values.pop())
    if length > limit:
        raise HTTPRequestError(
            413,
            "RequestEntityTooLargeException",
            f"The request body is {length} bytes; this server accepts up to {limit}.",
        )
    return length


def response(status: int, body: bytes, headers: dict[str, str], *, close: bool) -> bytes:
    """One complete HTTP/1.1 response (head and body), ready for a single ``sendall``."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Date: {formatdate(usegmt=True)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
