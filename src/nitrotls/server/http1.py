"""A strict HTTP/1.1 message-head parser and chunked-body decoder for the reverse proxy.

Why not h11: the proxy parses every request and every response on the hot path, and a few regular
expressions over the head are several times faster. Strictness is the defence against request
smuggling: CRLF line endings only, no obs-fold, token header names, no control characters, a
``Transfer-Encoding`` other than exactly ``chunked`` refused, ``Transfer-Encoding`` together with
``Content-Length`` refused, differing ``Content-Length`` values refused. Bodies are re-framed by
the proxy (chunk extensions and trailers dropped), so upstream never sees the client's framing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nitrotls.server.errors import ServerError

MAX_HEAD = 16 * 1024
MAX_HEADERS = 100
MAX_CHUNK_LINE = 1024
MAX_TRAILER = 8 * 1024

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.([01])")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?")
_HEADER = re.compile(rb"(" + _TOKEN + rb"):([\t\x20-\x7e\x80-\xff]*)")
_FIELDS = rb"(?:\r\n" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*)*"
# Whole heads validated by one regex (the common case); per-line checks only explain failures.
_REQUEST_HEAD = re.compile(_TOKEN + rb" /[\x21-\x7e]* HTTP/1\.[01]" + _FIELDS)
_RESPONSE_HEAD = re.compile(rb"HTTP/1\.[01] [1-9][0-9][0-9](?: [\t\x20-\x7e\x80-\xff]*)?" + _FIELDS)
_DIGITS = re.compile(rb"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
_OWS = b" \t"

# Framing of a body.
NONE, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3

# Request headers the proxy consumes or replaces instead of forwarding.
_REQUEST_SPECIAL = frozenset(
    (
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
    )
)
_RESPONSE_SPECIAL = frozenset(
    (
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    )
)
_CONNECTION_KNOWN = frozenset((b"close", b"keep-alive", b"upgrade"))


class ProtocolError(ServerError):
    """A message that is not strict HTTP/1.1; ``status`` is the answer the peer deserves."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class RequestHead:
    """A parsed request head; ``fields`` are the validated lines to forward as they came."""

    method: bytes
    target: bytes
    minor: int
    fields: list[bytes]
    framing: int = NONE
    length: int = 0
    keep_alive: bool = True
    host: bytes | None = None
    expect_continue: bool = False
    upgrade: bytes | None = None


@dataclass(slots=True)
class ResponseHead:
    """A parsed response head from upstream."""

    status: int
    minor: int
    status_line: bytes
    fields: list[bytes]
    framing: int = NONE
    length: int = 0
    keep_alive: bool = True
    upgrade: bytes | None = None
    connection_tokens: set[bytes] = field(default_factory=set)


def parse_request(head: bytes) -> RequestHead:
    """Parse a request head (without the final blank line)."""
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError("malformed request line", 505 if b" HTTP/" in lines[0] else 400)
    method, target, minor = match[1], match[2], int(match[3])
    if not (target.startswith(b"/") or (target == b"*" and method == b"OPTIONS")):
        raise ProtocolError("only origin-form request targets are accepted")
    if method == b"CONNECT":
        raise ProtocolError("CONNECT is not supported", 405)
    request = RequestHead(method, target, minor, [], keep_alive=minor == 1)
    valid = _REQUEST_HEAD.fullmatch(head) is not None
    special = _split_fields(lines, request.fields, _REQUEST_SPECIAL, valid=valid)
    tokens: set[bytes] = set()
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    for name, value in special:
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            encodings.append(value)
        elif name == b"connection":
            tokens.update(_tokens(value))
        elif name == b"host":
            if request.host is not None:
                raise ProtocolError("more than one Host header")
            request.host = value
        elif name == b"expect":
            if value.lower() != b"100-continue":
                raise ProtocolError("only Expect: 100-continue is supported", 417)
            request.expect_continue = True
        elif name == b"upgrade":
            request.upgrade = value
    if minor == 1 and request.host is None:
        raise ProtocolError("HTTP/1.1 request without a Host header")
    if b"close" in tokens:
        request.keep_alive = False
    elif minor == 0:
        request.keep_alive = b"keep-alive" in tokens
    if request.upgrade is not None and (minor == 0 or b"upgrade" not in tokens):
        request.upgrade = None
    request.framing, request.length = _framing(lengths, encodings, minor, request=True)
    _drop_connection_named(request.fields, tokens)
    return request


def parse_response(head: bytes, method: bytes) -> ResponseHead:
    """Parse a response head from upstream to a request made with ``method``."""
    lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError("upstream sent a malformed status line", 502)
    minor, status = int(match[1]), int(match[2])
    response = ResponseHead(status, minor, lines[0], [], keep_alive=minor == 1)
    valid = _RESPONSE_HEAD.fullmatch(head) is not None
    special = _split_fields(lines, response.fields, _RESPONSE_SPECIAL, upstream=True, valid=valid)
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    tokens = response.connection_tokens
    for name, value in special:
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            encodings.append(value)
        elif name == b"connection":
            tokens.update(_tokens(value))
        elif name == b"upgrade":
            response.upgrade = value
    if b"close" in tokens:
        response.keep_alive = False
    elif minor == 0:
        response.keep_alive = b"keep-alive" in tokens
    if status < 200 or status in (204, 304) or method == b"HEAD":
        response.framing = NONE
        if status == 304 or method == b"HEAD":
            _keep_length_for_head(response, lengths)
    else:
        try:
            response.framing, response.length = _framing(lengths, encodings, minor, request=False)
        except ProtocolError as error:
            raise ProtocolError(f"upstream: {error}", 502) from None
        if response.framing == UNTIL_CLOSE:
            response.keep_alive = False
    _drop_connection_named(response.fields, tokens)
    return response


def _keep_length_for_head(response: ResponseHead, lengths: list[bytes]) -> None:
    """A HEAD or 304 answer may announce the length the full body would have: pass it on."""
    if lengths and all(_DIGITS.fullmatch(v) for v in lengths) and len(set(lengths)) == 1:
        response.fields.append(b"Content-Length: " + lengths[0])


def _split_fields(
    lines: list[bytes],
    keep: list[bytes],
    special: frozenset[bytes],
    *,
    upstream: bool = False,
    valid: bool = False,
) -> list[tuple[bytes, bytes]]:
    """Append plain header lines to ``keep``, return special ones lowered. ``valid`` says the
    whole head already matched the strict grammar; otherwise each line is checked here."""
    status = 502 if upstream else 400
    if len(lines) - 1 > MAX_HEADERS:
        raise ProtocolError(f"more than {MAX_HEADERS} header fields", 431 if not upstream else 502)
    found: list[tuple[bytes, bytes]] = []
    match = _HEADER.fullmatch
    for line in lines[1:]:
        if not valid and match(line) is None:
            raise ProtocolError("malformed header field (or obs-fold, or a bare CR/LF)", status)
        name, _, value = line.partition(b":")
        name = name.lower()
        if name in special:
            found.append((name, value.strip(_OWS)))
        else:
            keep.append(line)
    if not valid:  # every line passed on its own: something else is wrong (e.g. a bare CR)
        raise ProtocolError("malformed message head", status)
    return found


def _tokens(value: bytes) -> list[bytes]:
    lowered = value.lower()
    if lowered in _CONNECTION_KNOWN:  # the usual single token
        return [lowered]
    return [token.strip(_OWS) for token in lowered.split(b",") if token.strip(_OWS)]


def _drop_connection_named(fields: list[bytes], tokens: set[bytes]) -> None:
    """Remove headers that the Connection header declared hop-by-hop."""
    if not tokens:
        return
    extra = tokens - _CONNECTION_KNOWN
    if extra:
        fields[:] = [f for f in fields if f.partition(b":")[0].lower() not in extra]


def _framing(
    lengths: list[bytes], encodings: list[bytes], minor: int, *, request: bool
) -> tuple[int, int]:
    if encodings:
        if minor == 0:
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 message")
        if lengths:
            raise ProtocolError("both Transfer-Encoding and Content-Length")
        if len(encodings) != 1 or encodings[0].lower() != b"chunked":
            raise ProtocolError("only 'Transfer-Encoding: chunked' is supported", 501)
        return CHUNKED, 0
    if len(lengths) == 1 and _DIGITS.fullmatch(lengths[0]):  # the usual case
        length = int(lengths[0])
        return (LENGTH, length) if length else (NONE, 0)
    if lengths:
        values = {v for item in lengths for v in item.split(b",")}
        values = {v.strip(_OWS) for v in values}
        if len(values) != 1:
            raise ProtocolError("conflicting Content-Length values")
        (value,) = values
        if not _DIGITS.fullmatch(value):
            raise ProtocolError("Content-Length is not a decimal number")
        length = int(value)
        return (LENGTH, length) if length else (NONE, 0)
    return (NONE, 0) if request else (UNTIL_CLOSE, 0)


class ChunkedDecoder:
    """Incremental decoder for ``Transfer-Encoding: chunked``; trailers are read and dropped."""

    __slots__ = ("_buffer", "_remaining", "_state", "_trailer_size", "done")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._remaining = 0
        self._buffer = b""
        self._trailer_size = 0
        self.done = False

    def feed(self, data: bytes, out: list[bytes]) -> bytes:
        """Append decoded payload pieces to ``out``; return bytes past the end of the body."""
        view = self._buffer + data if self._buffer else data
        self._buffer = b""
        pos = 0
        end = len(view)
        while pos < end and not self.done:
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, end - pos)
                out.append(view[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = self._DATA_END
                continue
            line_end = view.find(b"\r\n", pos)
            if line_end < 0:
                self._keep_partial(view[pos:])
                return b""
            line = view[pos:line_end]
            pos = line_end + 2
            if state == self._SIZE:
                self._on_size(line)
            elif state == self._DATA_END:
                if line:
                    raise ProtocolError("chunk data longer than its announced size")
                self._state = self._SIZE
            else:
                self._on_trailer(line)
        return view[pos:] if pos < end else b""

    def _keep_partial(self, rest: bytes) -> None:
        limit = MAX_CHUNK_LINE if self._state != self._TRAILER else MAX_TRAILER
        if len(rest) > limit:
            raise ProtocolError("chunk-size line or trailer too long")
        self._buffer = rest

    def _on_size(self, line: bytes) -> None:
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise ProtocolError("malformed chunk-size line")
        size = int(match[1], 16)
        if size == 0:
            self._state = self._TRAILER
        else:
            self._remaining = size
            self._state = self._DATA

    def _on_trailer(self, line: bytes) -> None:
        if not line:
            self.done = True
            return
        self._trailer_size += len(line) + 2
        if self._trailer_size > MAX_TRAILER or _HEADER.fullmatch(line) is None:
            raise ProtocolError("malformed or oversized trailer section")


def chunk(data: bytes) -> bytes:
    """One chunk in canonical framing."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
