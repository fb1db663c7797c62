"""The attestation request on an open TLS connection, as a sans-I/O state machine.

The same bytes go out and the same checks apply whether the caller drives a plain socket, an
httpcore stream or an asyncio stream, so all three share this class. The reply a nitrotls server
sends (HTTP/1.1, ``Content-Length``, no transfer coding) is parsed directly: that is every
connection's path, so it is kept to a few slices. Any other shape of reply (chunked, 1xx,
unusual syntax, an early EOF) is handed, bytes and all, to h11, which decides as it always has.
The body is bounded so a hostile server cannot make the client buffer without limit.
"""

from __future__ import annotations

import base64
import re

import h11

from nitrotls.client.errors import AttestationExchangeError, ClientError

ATTESTATION_PATH = "/.well-known/nitrotls/attestation"
MAX_DOCUMENT = 16 * 1024
MAX_HEAD = 16 * 1024
_HOST = re.compile(r"[A-Za-z0-9._~:%\[\]-]+")
_STATUS = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?")
_FIELD = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)[ \t]*"
)
_DIGITS = re.compile(rb"[0-9]{1,9}")


class AttestationExchange:
    """One ``GET /.well-known/nitrotls/attestation?nonce=…`` and its reply."""

    def __init__(self, host: str, nonce: bytes) -> None:
        if not _HOST.fullmatch(host):
            raise ClientError(f"host {host!r} cannot be sent in a Host header (IDNA-encode it)")
        self._host = host
        self._nonce = nonce
        self._buffer = bytearray()
        self._scanned = 0  # how far the buffer is known to hold no end of head
        self._status = 0
        self._content_type = ""
        self._length = -1  # Content-Length once the head is parsed
        self._head_end = 0
        self._close = False
        self._body = b""
        self._done = False
        self._slow: _H11Reply | None = None

    def _target(self) -> str:
        query = base64.urlsafe_b64encode(self._nonce).rstrip(b"=").decode()
        return f"{ATTESTATION_PATH}?nonce={query}"

    def request_bytes(self) -> bytes:
        return (
            f"GET {self._target()} HTTP/1.1\r\nHost: {self._host}\r\n"
            "Accept: application/cose\r\n\r\n"
        ).encode("ascii")

    @property
    def nonce(self) -> bytes:
        return self._nonce

    @property
    def done(self) -> bool:
        return self._slow.done if self._slow is not None else self._done

    @property
    def keeps_alive(self) -> bool:
        """Whether the connection may carry application requests after the reply."""
        if self._slow is not None:
            return self._slow.keeps_alive
        return self._done and not self._close

    def feed(self, data: bytes) -> bool:
        """Feed bytes from the server (``b""`` at EOF); return True once the reply is complete."""
        if self._slow is not None:
            return self._slow.feed(data)
        if self._done:
            if data:
                raise AttestationExchangeError("server sent bytes after the attestation reply")
            return True
        if not data:  # EOF before a complete reply
            if not self._buffer:
                raise AttestationExchangeError("server closed the connection before replying")
            return self._fall_back(eof=True)  # h11 says what was missing
        self._buffer += data
        if self._length < 0 and not self._parse_head():
            if self._slow is not None:
                return self._slow.done
            return self._fall_back(eof=False) if len(self._buffer) > MAX_HEAD else False
        received = len(self._buffer) - self._head_end
        if received < self._length:
            return False
        if received > self._length:
            raise AttestationExchangeError("server sent bytes after the attestation reply")
        self._body = bytes(self._buffer[self._head_end :])
        self._done = True
        return True

    def _parse_head(self) -> bool:
        """Parse the head once it is complete; False while incomplete or when h11 took over."""
        end = self._buffer.find(b"\r\n\r\n", self._scanned)
        if end < 0:
            self._scanned = max(0, len(self._buffer) - 3)
            return False
        if end > MAX_HEAD:
            return self._give_up()  # not a head a nitrotls server sends: h11 decides
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        status = _STATUS.fullmatch(lines[0])
        if status is None:
            return self._give_up()
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            field = _FIELD.fullmatch(line)
            if field is None:
                return self._give_up()
            name = field[1].lower()
            if name in fields:  # repeated fields merge differently per name: not our fast path
                return self._give_up()
            fields[name] = field[2]
        length = fields.get(b"content-length")
        code = int(status[1])
        if length is None or b"transfer-encoding" in fields or code in (204, 304):
            return self._give_up()
        if not _DIGITS.fullmatch(length):
            return self._give_up()
        self._length = int(length)
        if self._length > MAX_DOCUMENT:
            raise AttestationExchangeError(f"attestation reply larger than {MAX_DOCUMENT} bytes")
        self._status = code
        content_type = fields.get(b"content-type", b"")
        self._content_type = content_type.decode("latin-1").split(";")[0].strip().lower()
        connection = fields.get(b"connection", b"").lower()
        self._close = b"close" in (token.strip() for token in connection.split(b","))
        self._head_end = end + 4
        return True

    def _give_up(self) -> bool:
        self._fall_back(eof=False)
        return False

    def _fall_back(self, *, eof: bool) -> bool:
        """Hand everything received so far to h11 (and the end of the stream, if it came)."""
        slow = self._slow = _H11Reply(self._host, self._target())
        buffered, self._buffer = bytes(self._buffer), bytearray()
        done = slow.feed(buffered) if buffered else False
        return slow.feed(b"") if eof and not done else done

    def document(self) -> bytes:
        """The COSE_Sign1 bytes of a complete, successful reply."""
        if self._slow is not None:
            status, content_type, body = self._slow.result()
        elif not self._done:
            raise AttestationExchangeError("attestation reply incomplete")
        else:
            status, content_type, body = self._status, self._content_type, self._body
        if status != 200:
            raise AttestationExchangeError(
                f"attestation endpoint answered HTTP {status}; is this a nitrotls server?"
            )
        if content_type != "application/cose":
            raise AttestationExchangeError(
                f"attestation endpoint answered {content_type or 'no content type'}; "
                "expected application/cose"
            )
        return body


class _H11Reply:
    """The general path: h11 parses whatever a server sent, as a client that sent our request."""

    def __init__(self, host: str, target: str) -> None:
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        request = h11.Request(
            method="GET", target=target, headers=[("Host", host), ("Accept", "application/cose")]
        )
        self._conn.send(request)
        self._conn.send(h11.EndOfMessage())
        self._status: int | None = None
        self._content_type = ""
        self._body = bytearray()
        self.done = False

    @property
    def keeps_alive(self) -> bool:
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    def feed(self, data: bytes) -> bool:
        self._conn.receive_data(data)
        while not self.done:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as error:
                raise AttestationExchangeError(f"malformed HTTP reply: {error}") from None
            if event is h11.NEED_DATA:
                if data == b"":
                    raise AttestationExchangeError("server closed the connection mid-reply")
                return False
            self._handle(event)
        return True

    def _handle(self, event: object) -> None:
        if isinstance(event, h11.Response):
            self._status = event.status_code
            for name, value in event.headers:
                if name == b"content-type":
                    self._content_type = value.decode("latin-1").split(";")[0].strip().lower()
        elif isinstance(event, h11.Data):
            self._body += event.data
            if len(self._body) > MAX_DOCUMENT:
                raise AttestationExchangeError(
                    f"attestation reply larger than {MAX_DOCUMENT} bytes"
                )
        elif isinstance(event, h11.EndOfMessage):
            self.done = True
        elif isinstance(event, h11.ConnectionClosed):
            raise AttestationExchangeError("server closed the connection before replying")

    def result(self) -> tuple[int | None, str, bytes]:
        if not self.done:
            raise AttestationExchangeError("attestation reply incomplete")
        return self._status, self._content_type, bytes(self._body)
