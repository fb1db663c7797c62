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
from typing import Final, NoReturn

from nitrotls.server.errors import ServerError

MAX_HEAD: Final = 16 * 1024
MAX_HEADERS: Final = 100
MAX_CHUNK_LINE = 1024
MAX_TRAILER = 8 * 1024

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"
_FIELDS = rb"(?:\r\n" + _TOKEN + rb":" + _VALUE + rb")*"
# Whole heads validated (and split into their parts) by one regex each: the common case costs one
# C-level match. Only when it fails do the per-line checks below run, to say what is wrong.
_REQUEST = re.compile(rb"(" + _TOKEN + rb") (/[\x21-\x7e]*) HTTP/1\.([01])(" + _FIELDS + rb")")
_RESPONSE = re.compile(
    rb"HTTP/1\.([01])( ([1-9][0-9][0-9])(?: " + _VALUE + rb")?)(" + _FIELDS + rb")"
)
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.([01])")
_HEADER = re.compile(rb"(" + _TOKEN + rb"):(" + _VALUE + rb")")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;" + _VALUE + rb")?")
_OWS: Final = b" \t"
_MIN_FIELD = len(b"\r\nX:")  # a field block longer than this many bytes per field may hold more
_SHORT = _MIN_FIELD * MAX_HEADERS  # heads up to this long cannot hold too many fields


def _special(names: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """Split a validated field block at the named fields: ``[kept, name, value, kept, ...]``."""
    alternatives = b"|".join(re.escape(name) for name in names)
    return re.compile(rb"\r\n(" + alternatives + rb"):([^\r]*)", re.IGNORECASE)


# Framing of a body.
NONE: Final = 0
LENGTH: Final = 1
CHUNKED: Final = 2
UNTIL_CLOSE: Final = 3

_HOP_BY_HOP = (
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
)
# Request fields the proxy consumes or replaces instead of forwarding (the client is not
# trusted with forwarding headers; Host and Expect are re-emitted by the proxy).
_REQUEST_SPECIAL = _special(
    (
        *_HOP_BY_HOP,
        b"host",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
    )
)
_RESPONSE_SPECIAL = _special(_HOP_BY_HOP)


def _plain_fields(names: tuple[bytes, ...]) -> bytes:
    """Any number of field lines none of which is one of ``names`` (case-insensitive).

    Possessive (``++``, ``*+``): a name stops at its colon, a value before CR, and a line that
    follows is special or absent, so backtracking into them can never help a match; not
    offering it saves ``re`` its bookkeeping on every line (about 100 ns per response head)."""
    alternatives = b"|".join(re.escape(name) for name in names)
    return rb"((?:\r\n(?!(?i:" + alternatives + rb"):)" + _TOKEN + rb"+:" + _VALUE + rb"+)*+)"


_REQUEST_NAMES = (
    *_HOP_BY_HOP,
    b"host",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
)
# A field value without its surrounding blanks: words joined by blank runs, no backtracking.
_VISIBLE = rb"[\x21-\x7e\x80-\xff]++"
_TRIMMED = rb"[ \t]*+((?:" + _VISIBLE + rb"(?:[ \t]++" + _VISIBLE + rb")*+)?)[ \t]*+"
_CONNECTION_LINE = rb"\r\n(?i:connection):[ \t]*+((?i:close|keep-alive))[ \t]*+"
# Fast paths for the common heads, matched (and validated) by one regex each: a request whose
# only special fields are one Host and at most one "Connection: close|keep-alive"; a response
# whose only special fields are one decimal Content-Length and at most such a Connection. Any
# other head takes the general path below, which gives the same answer for these.
_PLAIN_REQUEST = _plain_fields(_REQUEST_NAMES)
_FAST_REQUEST = re.compile(
    rb"("
    + _TOKEN
    + rb"+) (/[\x21-\x7e]*+) HTTP/1\.([01])"
    + _PLAIN_REQUEST
    + rb"(?:\r\n(?i:host):"
    + _TRIMMED
    + _PLAIN_REQUEST
    + rb"(?:"
    + _CONNECTION_LINE
    + _PLAIN_REQUEST
    + rb")?"
    + rb"|"
    + _CONNECTION_LINE
    + _PLAIN_REQUEST
    + rb"\r\n(?i:host):"
    + _TRIMMED
    + _PLAIN_REQUEST
    + rb")"
)
_PLAIN_RESPONSE = _plain_fields(_HOP_BY_HOP)
_LENGTH_LINE = rb"\r\n(?i:content-length):[ \t]*+([0-9]{1,18})[ \t]*+"
_FAST_RESPONSE = re.compile(
    rb"HTTP/1\.([01])( ([1-9][0-9][0-9])(?: "
    + _VALUE
    + rb"+)?)"
    + _PLAIN_RESPONSE
    + rb"(?:"
    + _LENGTH_LINE
    + _PLAIN_RESPONSE
    + rb"(?:"
    + _CONNECTION_LINE
    + _PLAIN_RESPONSE
    + rb")?"
    + rb"|"
    + _CONNECTION_LINE
    + _PLAIN_RESPONSE
    + _LENGTH_LINE
    + _PLAIN_RESPONSE
    + rb")"
)
_CONNECTION_KNOWN = frozenset((b"close", b"keep-alive", b"upgrade"))


class ProtocolError(ServerError):
    """A message that is not strict HTTP/1.1; ``status`` is the answer the peer deserves."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RequestHead:
    """A parsed request head. ``fields`` is the block of header lines to forward as they came,
    each preceded by CRLF (hop-by-hop, forwarding and Host/Expect lines removed)."""

    __slots__ = (
        "expect_continue",
        "fields",
        "framing",
        "host",
        "keep_alive",
        "length",
        "method",
        "minor",
        "target",
        "upgrade",
    )

    def __init__(self, method: bytes, target: bytes, minor: int, fields: bytes) -> None:
        self.method = method
        self.target = target
        self.minor = minor
        self.fields = fields
        self.framing = NONE
        self.length = 0
        self.keep_alive = minor == 1
        self.host: bytes | None = None
        self.expect_continue = False
        self.upgrade: bytes | None = None


class ResponseHead:
    """A parsed response head from upstream. ``status_rest`` is the status line after
    ``HTTP/1.x`` (`` 200 OK``); ``fields`` as in :class:`RequestHead`."""

    __slots__ = (
        "fields",
        "framing",
        "keep_alive",
        "length",
        "minor",
        "status",
        "status_rest",
        "upgrade",
    )

    def __init__(self, status: int, minor: int, status_rest: bytes, fields: bytes) -> None:
        self.status = status
        self.minor = minor
        self.status_rest = status_rest
        self.fields = fields
        self.framing = NONE
        self.length = 0
        self.keep_alive = minor == 1
        self.upgrade: bytes | None = None


def parse_request(head: bytes) -> RequestHead:
    """Parse a request head (without the final blank line)."""
    fast = _FAST_REQUEST.fullmatch(head)
    if fast is not None and (len(head) <= _SHORT or _few_fields(head)):
        method, target, minor_text, first, host, middle, connection, last, c2, m2, h2, l2 = (
            fast.groups()
        )
        if method != b"CONNECT":
            if host is None:  # the Connection line came first
                connection, middle, host, last = c2, m2, h2, l2
            request = RequestHead(
                method,
                target,
                minor_text[0] - 48,
                first + middle + last if last else first + middle,
            )
            request.host = host
            if connection is not None:
                if connection.lower() == b"close":
                    request.keep_alive = False
                elif request.minor == 0:
                    request.keep_alive = True
            return request
    match = _REQUEST.fullmatch(head)
    if match is None:
        _explain_request(head)
    method, target, minor_text, block = match.groups()
    if method == b"CONNECT":
        raise ProtocolError("CONNECT is not supported", 405)
    if len(block) > _MIN_FIELD * MAX_HEADERS and block.count(b"\r\n") > MAX_HEADERS:
        raise ProtocolError(f"more than {MAX_HEADERS} header fields", 431)
    # [kept, name, value, kept, name, value, ..., kept]
    parts = _REQUEST_SPECIAL.split(block)
    request = RequestHead(
        method,
        target,
        minor_text[0] - 48,
        parts[0] if len(parts) == 1 else b"".join(parts[::3]),
    )
    tokens: set[bytes] | None = None
    lengths: list[bytes] | None = None
    encodings: list[bytes] | None = None
    for i in range(1, len(parts), 3):
        name = parts[i].lower()
        if name == b"host":
            if request.host is not None:
                raise ProtocolError("more than one Host header")
            request.host = parts[i + 1].strip(_OWS)
        elif name == b"connection":
            if tokens is None:
                tokens = set()
            tokens.update(_tokens(parts[i + 1]))
        elif name == b"content-length":
            lengths = [] if lengths is None else lengths
            lengths.append(parts[i + 1].strip(_OWS))
        elif name == b"transfer-encoding":
            encodings = [] if encodings is None else encodings
            encodings.append(parts[i + 1].strip(_OWS))
        elif name == b"expect":
            if parts[i + 1].strip(_OWS).lower() != b"100-continue":
                raise ProtocolError("only Expect: 100-continue is supported", 417)
            request.expect_continue = True
        elif name == b"upgrade":
            request.upgrade = parts[i + 1].strip(_OWS)
        # x-forwarded-*, forwarded, keep-alive, te, trailer, proxy-connection: dropped
    minor = request.minor
    if minor == 1 and request.host is None:
        raise ProtocolError("HTTP/1.1 request without a Host header")
    if tokens is not None:
        if b"close" in tokens:
            request.keep_alive = False
        elif minor == 0:
            request.keep_alive = b"keep-alive" in tokens
        if not tokens <= _CONNECTION_KNOWN:
            request.fields = _drop_connection_named(request.fields, tokens)
    if request.upgrade is not None and (minor == 0 or tokens is None or b"upgrade" not in tokens):
        request.upgrade = None
    if request.upgrade is not None:
        request.upgrade = _without_h2c(request.upgrade)
    if lengths is not None or encodings is not None:
        request.framing, request.length = _framing(
            lengths or [], encodings or [], minor, request=True
        )
    return request


def _without_h2c(upgrade: bytes) -> bytes | None:
    """The Upgrade protocols minus ``h2c``: over TLS a server ignores it (RFC 9113 §3.1), and
    forwarding it would let a client switch the upstream connection to cleartext HTTP/2 behind
    the proxy's back (h2c smuggling)."""
    kept = [p for p in (x.strip(_OWS) for x in upgrade.split(b",")) if p and p.lower() != b"h2c"]
    return b", ".join(kept) if kept else None


def _few_fields(head: bytes) -> bool:
    """At most ``MAX_HEADERS`` field lines (a head of ``_SHORT`` bytes or less always has)."""
    return head.count(b"\r\n") <= MAX_HEADERS


def _explain_request(head: bytes) -> NoReturn:
    """Raise the most specific error for a request head the strict regex refused."""
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError("malformed request line", 505 if b" HTTP/" in lines[0] else 400)
    if not match[2].startswith(b"/"):
        raise ProtocolError("only origin-form request targets are accepted")
    if match[1] == b"CONNECT":
        raise ProtocolError("CONNECT is not supported", 405)
    _explain_fields(lines, 400, 431)


def _explain_fields(lines: list[bytes], status: int, too_many: int) -> NoReturn:
    if len(lines) - 1 > MAX_HEADERS:
        raise ProtocolError(f"more than {MAX_HEADERS} header fields", too_many)
    for line in lines[1:]:
        if _HEADER.fullmatch(line) is None:
            raise ProtocolError("malformed header field (or obs-fold, or a bare CR/LF)", status)
    # Every line passed on its own: something else is wrong (e.g. a bare CR or LF).
    raise ProtocolError("malformed message head", status)


def parse_response(head: bytes, method: bytes) -> ResponseHead:
    """Parse a response head from upstream to a request made with ``method``."""
    fast = _FAST_RESPONSE.fullmatch(head)
    if fast is not None and method != b"HEAD" and (len(head) <= _SHORT or _few_fields(head)):
        minor_text, rest, status_text, first, length, middle, connection, last, c2, m2, l2, la2 = (
            fast.groups()
        )
        status = int(status_text)
        if status >= 200 and status != 204 and status != 304:
            if length is None:  # the Connection line came first
                connection, middle, length, last = c2, m2, l2, la2
            response = ResponseHead(
                status, minor_text[0] - 48, rest, first + middle + last if last else first + middle
            )
            response.length = int(length)
            response.framing = LENGTH if response.length else NONE
            if connection is not None:
                if connection.lower() == b"close":
                    response.keep_alive = False
                elif response.minor == 0:
                    response.keep_alive = True
            return response
    match = _RESPONSE.fullmatch(head)
    if match is None:
        lines = head.split(b"\r\n")
        if _RESPONSE.fullmatch(lines[0]) is None:
            raise ProtocolError("upstream sent a malformed status line", 502)
        _explain_fields(lines, 502, 502)
    minor_text, rest, status_text, block = match.groups()
    if len(block) > _MIN_FIELD * MAX_HEADERS and block.count(b"\r\n") > MAX_HEADERS:
        raise ProtocolError(f"more than {MAX_HEADERS} header fields", 502)
    # [kept, name, value, kept, name, value, ..., kept]
    parts = _RESPONSE_SPECIAL.split(block)
    status = int(status_text)
    response = ResponseHead(
        status, minor_text[0] - 48, rest, parts[0] if len(parts) == 1 else b"".join(parts[::3])
    )
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    tokens: set[bytes] | None = None
    for i in range(1, len(parts), 3):
        name = parts[i].lower()
        if name == b"content-length":
            lengths.append(parts[i + 1].strip(_OWS))
        elif name == b"connection":
            if tokens is None:
                tokens = set()
            tokens.update(_tokens(parts[i + 1]))
        elif name == b"transfer-encoding":
            encodings.append(parts[i + 1].strip(_OWS))
        elif name == b"upgrade":
            response.upgrade = parts[i + 1].strip(_OWS)
    if tokens is not None:
        if b"close" in tokens:
            response.keep_alive = False
        elif response.minor == 0:
            response.keep_alive = b"keep-alive" in tokens
        if not tokens <= _CONNECTION_KNOWN:
            response.fields = _drop_connection_named(response.fields, tokens)
    if status < 200 or status == 204 or status == 304 or method == b"HEAD":
        if status == 304 or method == b"HEAD":
            _keep_length_for_head(response, lengths)
        return response  # framing NONE
    if len(lengths) == 1 and not encodings:  # the usual case
        length = lengths[0]
        if _DIGITS.fullmatch(length):
            response.length = int(length)
            response.framing = LENGTH if response.length else NONE
            return response
    try:
        response.framing, response.length = _framing(
            lengths, encodings, response.minor, request=False
        )
    except ProtocolError as error:
        raise ProtocolError(f"upstream: {error}", 502) from None
    if response.framing == UNTIL_CLOSE:
        response.keep_alive = False
    return response


def _keep_length_for_head(response: ResponseHead, lengths: list[bytes]) -> None:
    """A HEAD or 304 answer may announce the length the full body would have: pass it on."""
    if lengths and all(_DIGITS.fullmatch(v) for v in lengths) and len(set(lengths)) == 1:
        response.fields += b"\r\nContent-Length: " + lengths[0]


def header_value(fields: bytes, name: bytes) -> bytes | None:
    """The value of the first field called ``name`` (lower case) in a forwarded field block."""
    for line in fields.split(b"\r\n"):
        field_name, colon, value = line.partition(b":")
        if colon and field_name.lower() == name:
            return value.strip(_OWS)
    return None


def _tokens(value: bytes) -> list[bytes]:
    lowered = value.strip(_OWS).lower()
    if lowered in _CONNECTION_KNOWN:  # the usual single token
        return [lowered]
    return [token.strip(_OWS) for token in lowered.split(b",") if token.strip(_OWS)]


def _drop_connection_named(fields: bytes, tokens: set[bytes]) -> bytes:
    """Remove the fields that the Connection header declared hop-by-hop."""
    extra = tokens - _CONNECTION_KNOWN
    if not extra:
        return fields
    kept = [
        line for line in fields.split(b"\r\n")[1:] if line.partition(b":")[0].lower() not in extra
    ]
    return b"".join(b"\r\n" + line for line in kept)


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

    _SIZE = 0  # one name per line: class-body unpacking does not compile (mypyc)
    _DATA = 1
    _DATA_END = 2
    _TRAILER = 3

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
