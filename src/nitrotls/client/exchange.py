"""The attestation request on an open TLS connection, as a sans-I/O state machine.

The same bytes go out and the same checks apply whether the caller drives a plain socket, an
httpcore stream or an asyncio stream, so all three share this class. h11 parses the reply; the
body is bounded so a hostile server cannot make the client buffer without limit.
"""

from __future__ import annotations

import base64

import h11

from nitrotls.client.errors import AttestationExchangeError

ATTESTATION_PATH = "/.well-known/nitrotls/attestation"
MAX_DOCUMENT = 16 * 1024


class AttestationExchange:
    """One ``GET /.well-known/nitrotls/attestation?nonce=…`` and its reply."""

    def __init__(self, host: str, nonce: bytes) -> None:
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=16 * 1024)
        self._host = host
        self._nonce = nonce
        self._status: int | None = None
        self._content_type = ""
        self._body = bytearray()
        self._done = False

    def request_bytes(self) -> bytes:
        query = base64.urlsafe_b64encode(self._nonce).rstrip(b"=").decode()
        request = h11.Request(
            method="GET",
            target=f"{ATTESTATION_PATH}?nonce={query}",
            headers=[("Host", self._host), ("Accept", "application/cose")],
        )
        return self._conn.send(request) + self._conn.send(h11.EndOfMessage())

    @property
    def nonce(self) -> bytes:
        return self._nonce

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> bool:
        """Feed bytes from the server (``b""`` at EOF); return True once the reply is complete."""
        self._conn.receive_data(data)
        while not self._done:
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
            self._done = True
        elif isinstance(event, h11.ConnectionClosed):
            raise AttestationExchangeError("server closed the connection before replying")

    @property
    def keeps_alive(self) -> bool:
        """Whether the connection may carry application requests after the reply."""
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    def document(self) -> bytes:
        """The COSE_Sign1 bytes of a complete, successful reply."""
        if not self._done:
            raise AttestationExchangeError("attestation reply incomplete")
        if self._status != 200:
            raise AttestationExchangeError(
                f"attestation endpoint answered HTTP {self._status}; is this a nitrotls server?"
            )
        if self._content_type != "application/cose":
            raise AttestationExchangeError(
                f"attestation endpoint answered {self._content_type or 'no content type'}; "
                "expected application/cose"
            )
        return bytes(self._body)
