"""The proxy's HTTP/1.1 head parser: strictness, what is forwarded, and fast path = general path."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nitrotls.server import http1
from nitrotls.server.http1 import (
    CHUNKED,
    LENGTH,
    NONE,
    UNTIL_CLOSE,
    ProtocolError,
    RequestHead,
    ResponseHead,
    header_value,
    parse_request,
    parse_response,
)

NGINX_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 26 Nov 2025 15:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 24\r\nConnection: keep-alive"
)


def test_common_request_keeps_plain_fields_and_drops_hop_by_hop() -> None:
    request = parse_request(
        b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nConnection: close"
        b"\r\nX-Forwarded-For: 6.6.6.6\r\nAccept: */*"
    )
    assert (request.method, request.target, request.minor) == (b"GET", b"/a?b=c", 1)
    assert request.host == b"example.com"
    assert request.fields == b"\r\nUser-Agent: t\r\nAccept: */*"
    assert request.keep_alive is False
    assert request.framing == NONE


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: h", True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close", False),
        (b"GET / HTTP/1.0", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive", True),
        (b"GET / HTTP/1.0\r\nHost: h\r\nconnection:  KEEP-ALIVE ", True),
    ],
)
def test_keep_alive_follows_version_and_connection(head: bytes, keep_alive: bool) -> None:
    assert parse_request(head).keep_alive is keep_alive


def test_body_framing_and_expect() -> None:
    sized = parse_request(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12")
    assert (sized.framing, sized.length) == (LENGTH, 12)
    chunked = parse_request(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked")
    assert chunked.framing == CHUNKED
    expect = parse_request(
        b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1"
    )
    assert expect.expect_continue and expect.fields == b""


def test_connection_named_fields_are_dropped() -> None:
    request = parse_request(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-secret\r\nX-Secret: 1")
    assert request.fields == b""


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x", 400),
        (b"GET / HTTP/1.1\r\nHost : h", 400),
        (b"GET / HTTP/1.1\r\nHost: h\nX: y", 400),
        (b"GET / HTTP/1.1\r\nHost: h\rX: y", 400),
        (b"GET / HTTP/1.1\r\nHost: h\x00", 400),
        (b"GET / HTTP/2.0\r\nHost: h", 505),
        (b"GET / HTTP/1.1", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked", 501),
        (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: something", 417),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com", 400),
        (b"CONNECT / HTTP/1.1\r\nHost: h", 405),
        (b"GET http://evil/ HTTP/1.1\r\nHost: h", 400),
        (b"OPTIONS * HTTP/1.1\r\nHost: h", 400),
        (b"GET / HTTP/1.1\r\nHost: h" + b"\r\nX: y" * 100, 431),
    ],
)
def test_bad_requests_are_refused_with_the_right_status(head: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(head)
    assert caught.value.status == status


def test_exactly_the_maximum_number_of_fields_is_accepted() -> None:
    fields = b"\r\nX: y" * (http1.MAX_HEADERS - 1)
    assert parse_request(b"GET / HTTP/1.1\r\nHost: h" + fields).fields == fields


def test_common_response_is_reframed_by_the_proxy() -> None:
    response = parse_response(NGINX_RESPONSE, b"GET")
    assert (response.status, response.status_rest) == (200, b" 200 OK")
    assert (response.framing, response.length, response.keep_alive) == (LENGTH, 24, True)
    assert b"Content-Length" not in response.fields and b"Connection" not in response.fields
    assert response.fields.startswith(b"\r\nServer: nginx\r\n")


@pytest.mark.parametrize(
    ("head", "method", "framing", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", b"GET", CHUNKED, True),
        (b"HTTP/1.1 200 OK", b"GET", UNTIL_CLOSE, False),
        (b"HTTP/1.1 204 No Content", b"GET", NONE, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0", b"GET", NONE, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10", b"HEAD", NONE, True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1", b"GET", LENGTH, False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close", b"GET", LENGTH, False),
    ],
)
def test_response_framing(head: bytes, method: bytes, framing: int, keep_alive: bool) -> None:
    response = parse_response(head, method)
    assert (response.framing, response.keep_alive) == (framing, keep_alive)


def test_head_answer_keeps_its_announced_length() -> None:
    response = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10", b"HEAD")
    assert response.fields == b"\r\nContent-Length: 10"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b",
        b"HTTP/2 200 OK",
        b"HTTP/1.1 200 OK" + b"\r\nX: y" * 101,
    ],
)
def test_bad_responses_are_a_bad_gateway(head: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_response(head, b"GET")
    assert caught.value.status == 502


def test_header_value_finds_a_forwarded_field() -> None:
    fields = b"\r\nUser-Agent: t\r\naccept:  application/json \r\nAccept: x"
    assert header_value(fields, b"accept") == b"application/json"
    assert header_value(fields, b"cookie") is None


# -- the fast paths must give exactly what the general path gives ----------------------------

_NAMES = [b"Host", b"host", b"Connection", b"Content-Length", b"Transfer-Encoding", b"Upgrade"]
_NAMES += [b"Expect", b"X-Forwarded-For", b"Keep-Alive", b"Accept", b"X-A", b"Bad Name"]
_VALUES = [b" h", b" a b ", b"", b" close", b"keep-alive", b" Keep-Alive\t", b" upgrade"]
_VALUES += [b" 24", b" 0", b"\t5\t", b" 1, 1", b" chunked", b" 100-continue", b" x\x00"]
# The shapes the fast paths take, and the near misses around them.
_PLAIN = [b"Accept: */*", b"User-Agent: t", b"X-A:", b"Date: Wed, 26 Nov 2025 15:00:00 GMT"]
_SPECIAL = [b"Host: h", b"host:  a b ", b"HOST:", b"Connection: close", b"connection:Keep-Alive"]
_SPECIAL += [b"Connection: upgrade", b"Content-Length: 24", b"content-length:\t0\t"]
_SPECIAL += [b"Content-Length: 007", b"Upgrade: ws", b"Transfer-Encoding: chunked"]
_SPECIAL += [b"Host: a\t \tb \t", b"Host:\t\x80 :b", b"Content-Length: 24 ", b"Connection:close \t"]


@st.composite
def _heads(draw: st.DrawFn, first_lines: list[bytes]) -> bytes:
    head = draw(st.sampled_from(first_lines))
    if draw(st.booleans()):
        lines = draw(st.lists(st.sampled_from(_PLAIN), max_size=3))
        lines += draw(st.lists(st.sampled_from(_SPECIAL), min_size=1, max_size=3))
        return head + b"".join(b"\r\n" + line for line in draw(st.permutations(lines)))
    for _ in range(draw(st.integers(0, 6))):
        separator = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r\n "]))
        head += separator + draw(st.sampled_from(_NAMES)) + b":" + draw(st.sampled_from(_VALUES))
    return head


def _outcome(parse: object, *args: bytes) -> object:
    try:
        result = parse(*args)  # type: ignore[operator]
    except ProtocolError as error:
        return ("refused", error.status)
    assert isinstance(result, (RequestHead, ResponseHead))
    # Every data attribute (``dir``: compiled classes have no ``__slots__`` to list them).
    names = [n for n in dir(result) if not n.startswith("_")]
    return tuple((n, getattr(result, n)) for n in names if not callable(getattr(result, n)))


_NEVER = re.compile(rb"(?!)")


@settings(max_examples=600, suppress_health_check=list(HealthCheck), deadline=None)
@given(_heads([b"GET / HTTP/1.1", b"POST /x HTTP/1.0", b"CONNECT / HTTP/1.1"]))
def test_request_fast_path_agrees_with_the_general_path(head: bytes) -> None:
    fast = _outcome(parse_request, head)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http1, "_FAST_REQUEST", _NEVER)
        assert _outcome(parse_request, head) == fast


@settings(max_examples=600, suppress_health_check=list(HealthCheck), deadline=None)
@given(
    _heads([b"HTTP/1.1 200 OK", b"HTTP/1.0 404 Not Found", b"HTTP/1.1 304 x", b"HTTP/1.1 101"]),
    st.sampled_from([b"GET", b"HEAD"]),
)
def test_response_fast_path_agrees_with_the_general_path(head: bytes, method: bytes) -> None:
    fast = _outcome(parse_response, head, method)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http1, "_FAST_RESPONSE", _NEVER)
        assert _outcome(parse_response, head, method) == fast


def test_fast_paths_are_taken_for_common_heads() -> None:
    assert http1._FAST_REQUEST.fullmatch(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close")
    assert http1._FAST_RESPONSE.fullmatch(NGINX_RESPONSE)


@pytest.mark.parametrize(
    ("upgrade", "kept"),
    [
        (b"h2c", None),
        (b"H2C", None),
        (b"websocket, h2c", b"websocket"),
        (b"websocket", b"websocket"),
    ],
)
def test_h2c_is_dropped_from_upgrade(upgrade: bytes, kept: bytes | None) -> None:
    """Over TLS a server ignores h2c (RFC 9113 §3.1); forwarding it would let the client turn
    the upstream connection into cleartext HTTP/2 behind the proxy (h2c smuggling)."""
    head = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: " + upgrade
    assert parse_request(head).upgrade == kept
