"""The little HTTP/1.1 the KMS protocol needs, read strictly and cheaply from a byte buffer.

``http.server`` parses headers with the email package, which costs more per request than
everything else the server does outside cryptography. KMS clients send one shape of request
(``POST /``, a dozen headers, a Content-Length body), so this module reads exactly that:
bounded lines, bounded header count, no folded headers, no chunked bodies, one Content-Length.
Anything else is answered with a 4xx and the connection closed.

The reader works on whatever bytes have arrived so far (the server is event-driven): it finds
complete lines, checks each one as it comes, and says "not yet" until the blank line that ends
the head has arrived, so a head that breaks a limit is refused before it is complete.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from functools import lru_cache
from http import HTTPStatus

MAX_LINE = 8192
MAX_HEADERS = 100
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")
_BLANK = (b"\r\n", b"\n")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TCHAR = "[!#$%&'*+.^_`|~0-9A-Za-z-]"
_REQUEST_LINE = re.compile(rf"({_TCHAR}+) ([^ \r\n]+) (HTTP/1\.[01])")
_NAMES = re.compile(rf"{_TCHAR}+(?::{_TCHAR}+)*")  # header names, joined with ":"
_OWS = " \t\x0b\x0c"  # what bytes.strip() removes from a value without CR or LF


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


class HeadReader:
    """Collects one request head line by line from a buffer; reusable after :meth:`reset`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._lines: list[bytes] = []
        self._skipped_blank = False

    @property
    def started(self) -> bool:
        """True once a line of a request (not the tolerated leading blank one) was read."""
        return bool(self._lines)

    def feed(self, buffer: bytes | bytearray, start: int) -> tuple[int, RequestHead | None]:
        """Consume complete lines from ``buffer[start:]``: (new start, the head when complete)."""
        if not self._lines and not self._skipped_blank:
            whole = _whole_head(buffer, start)
            if whole is not None:
                return whole
        while True:
            end = buffer.find(b"\n", start, start + MAX_LINE)
            if end < 0:
                if len(buffer) - start >= MAX_LINE:
                    raise _bad(f"A request line or header is longer than {MAX_LINE} bytes.", 431)
                return start, None
            line = bytes(buffer[start : end + 1])
            start = end + 1
            head = self._line(line)
            if head is not None:
                return start, head

    def _line(self, line: bytes) -> RequestHead | None:
        if line in _BLANK:
            if self._lines:
                head = _parse(self._lines)
                self.reset()
                return head
            if not self._skipped_blank:  # RFC 9112 §2.2: ignore an empty line before a request
                self._skipped_blank = True
                return None
            raise _bad("The request line must be METHOD SP TARGET SP HTTP-VERSION.")
        if len(self._lines) > MAX_HEADERS:
            raise _bad(f"More than {MAX_HEADERS} headers.", 431)
        self._lines.append(line)
        if len(self._lines) == 1:
            _request_line(line)  # refuse a bad request line before its headers arrive
        return None


def _whole_head(buffer: bytes | bytearray, start: int) -> tuple[int, RequestHead] | None:
    """The usual case, a complete well-formed CRLF head of at most MAX_LINE bytes already in
    the buffer, split at its CRLFs and colons (C string methods: a regular expression over every
    value byte cost a third more). None for anything else (a bare CR or LF, a leading blank
    line, a request line or header name that does not match), which the line-by-line reader then
    reads exactly as it would have, or refuses with the precise error."""
    end = buffer.find(b"\r\n\r\n", start, start + MAX_LINE)
    if end < 0:
        return None
    text = buffer[start : end + 2].decode("latin-1")
    lines = text.split("\r\n")  # the request line, the headers, and "" after the last CRLF
    crlfs = len(lines) - 1
    if text.count("\n") != crlfs or text.count("\r") != crlfs or crlfs > MAX_HEADERS + 1:
        return None
    request = _REQUEST_LINE.fullmatch(lines[0])
    if request is None:
        return None
    fields = [line.partition(":") for line in lines[1:-1]]
    names = [name for name, colon, _ in fields if colon]
    if len(names) != len(fields) or (names and not _NAMES.fullmatch(":".join(names))):
        return None
    headers: dict[str, str] = {}
    for name, _, value in fields:
        key = name.lower()
        value = value.strip(_OWS)
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    method, target, version = request.groups()
    return end + 4, RequestHead(method, target, version, headers)


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]):
        raise _bad("The request line must be METHOD SP TARGET SP HTTP-VERSION.")
    method, target, version = (part.decode("latin-1") for part in parts)
    if version not in _VERSIONS:
        raise _bad(f"HTTP version {version!r} is not supported.", 505)
    return method, target, version


def _parse(lines: list[bytes]) -> RequestHead:
    method, target, version = _request_line(lines[0])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise _bad("Folded (multi-line) headers are not accepted.")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise _bad("A header line must be NAME: VALUE.")
        key = name.decode("ascii").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return RequestHead(method, target, version, headers)


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


class _DateHeader:
    """``Date: …`` changes once a second; formatting it per response is measurable waste."""

    def __init__(self) -> None:
        self._second = -1
        self._line = ""

    def line(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = f"Date: {formatdate(now, usegmt=True)}"
        return self._line


_date = _DateHeader()


@lru_cache(maxsize=64)
def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def header_lines(headers: Mapping[str, str]) -> str:
    """Headers as they go on the wire (each line ends CRLF): render fixed ones once, up front."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


def response(status: int, body: bytes, headers: Mapping[str, str], *, close: bool) -> bytes:
    """One complete HTTP/1.1 response (head and body), ready for a single write."""
    return rendered_response(status, body, header_lines(headers), close=close)


def rendered_response(status: int, body: bytes, headers: str, *, close: bool) -> bytes:
    """:func:`response` with the headers already rendered by :func:`header_lines` (a server
    sends the same few on every answer; rendering them per answer is measurable waste)."""
    end = _CLOSE if close else "\r\n"
    head = (
        f"HTTP/1.1 {status} {_reason(status)}\r\n{_date.line()}\r\n{headers}"
        f"Content-Length: {len(body)}\r\n{end}"
    )
    return head.encode("latin-1") + body


_CLOSE = "Connection: close\r\n\r\n"
