"""The attestation exchange: the direct path for nitrotls' own replies, h11 for anything else."""

from __future__ import annotations

import pytest

from nitrotls.client.errors import AttestationExchangeError, ClientError
from nitrotls.client.exchange import MAX_DOCUMENT, AttestationExchange

NONCE = bytes(range(32))
DOCUMENT = bytes(range(256)) * 17  # 4352 bytes, every byte value


def _exchange() -> AttestationExchange:
    exchange = AttestationExchange("example.test:8443", NONCE)
    exchange.request_bytes()
    return exchange


def _reply(*headers: str, body: bytes = DOCUMENT, status: str = "200 OK") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\n{''.join(h + chr(13) + chr(10) for h in headers)}\r\n".encode()
        + body
    )


COSE = "Content-Type: application/cose"
LENGTH = f"Content-Length: {len(DOCUMENT)}"


def test_request_is_the_documented_get() -> None:
    exchange = AttestationExchange("example.test:8443", NONCE)
    assert exchange.request_bytes() == (
        b"GET /.well-known/nitrotls/attestation?nonce=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
        b" HTTP/1.1\r\nHost: example.test:8443\r\nAccept: application/cose\r\n\r\n"
    )


@pytest.mark.parametrize("host", ["a\r\nX-Injected: 1", "b\u00fccher.example", "a b", ""])
def test_hosts_that_cannot_be_a_header_are_refused(host: str) -> None:
    with pytest.raises(ClientError, match="Host header"):
        AttestationExchange(host, NONCE)


@pytest.mark.parametrize("piece", [1, 7, 100, 100_000])
def test_reply_in_any_pieces(piece: int) -> None:
    exchange, data = _exchange(), _reply(LENGTH, COSE + "; charset=binary", "Server: nitrotls")
    chunks = [data[i : i + piece] for i in range(0, len(data), piece)]
    assert [exchange.feed(chunk) for chunk in chunks][-1] is True
    assert exchange.done and exchange.keeps_alive
    assert exchange.document() == DOCUMENT


def test_connection_close_is_not_kept_alive() -> None:
    exchange = _exchange()
    assert exchange.feed(_reply(COSE, LENGTH, "Connection: keep-alive, Close"))
    assert exchange.document() == DOCUMENT
    assert not exchange.keeps_alive


def test_chunked_reply_goes_through_h11() -> None:
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(DOCUMENT), DOCUMENT)
    exchange = _exchange()
    assert exchange.feed(_reply(COSE, "Transfer-Encoding: chunked", body=body))
    assert exchange.document() == DOCUMENT and exchange.keeps_alive


def test_informational_reply_first_goes_through_h11() -> None:
    exchange = _exchange()
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    assert not exchange.feed(early)
    assert exchange.feed(_reply(COSE, LENGTH))
    assert exchange.document() == DOCUMENT


def test_http_1_0_reply_is_not_kept_alive() -> None:
    exchange = _exchange()
    exchange.feed(_reply(COSE, LENGTH).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    assert exchange.done and exchange.document() == DOCUMENT
    assert not exchange.keeps_alive


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (_reply(COSE, LENGTH, status="503 Service Unavailable", body=DOCUMENT), "HTTP 503"),
        (_reply("Content-Type: text/html", LENGTH), "expected application/cose"),
        (_reply(LENGTH), "no content type"),
    ],
)
def test_unsuccessful_replies_name_what_was_wrong(reply: bytes, message: str) -> None:
    exchange = _exchange()
    assert exchange.feed(reply)
    with pytest.raises(AttestationExchangeError, match=message):
        exchange.document()


def test_bytes_after_the_reply_are_refused() -> None:
    exchange = _exchange()
    with pytest.raises(AttestationExchangeError, match="after the attestation reply"):
        exchange.feed(_reply(COSE, LENGTH) + b"HTTP/1.1 200 OK\r\n")
    exchange = _exchange()
    assert exchange.feed(_reply(COSE, LENGTH))
    with pytest.raises(AttestationExchangeError, match="after the attestation reply"):
        exchange.feed(b"x")


def test_an_announced_oversized_body_is_refused_at_once() -> None:
    exchange = _exchange()
    with pytest.raises(AttestationExchangeError, match="larger than"):
        exchange.feed(_reply(COSE, f"Content-Length: {MAX_DOCUMENT + 1}", body=b""))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        _reply(COSE, LENGTH)[:-1],
    ],
)
def test_end_of_stream_before_a_complete_reply(data: bytes) -> None:
    exchange = _exchange()
    if data:
        assert not exchange.feed(data)
    with pytest.raises(AttestationExchangeError, match=r"closed (the )?connection"):
        exchange.feed(b"")
    with pytest.raises(AttestationExchangeError, match="incomplete"):
        exchange.document()


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n12345",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"NOTHTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * MAX_DOCUMENT + b"\r\n",
    ],
)
def test_malformed_replies_are_refused(reply: bytes) -> None:
    exchange = _exchange()
    with pytest.raises(AttestationExchangeError, match="malformed HTTP reply"):
        exchange.feed(reply)
