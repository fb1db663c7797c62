"""The host's outbound proxy and the enclave's forwarder: allow list, preamble, refusals."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from nitrotls.transport import (
    Address,
    AllowList,
    AllowListError,
    Destination,
    PreambleError,
    ProxyServer,
    connect,
    forward_opener,
    listen,
    load_allowlist,
    outbound_opener,
    parse_allowlist,
)
from nitrotls.transport.preamble import parse_request
from transport.support import echo, exchange, read_closed, run

HOST_PROXY = Address.vsock(3, 8000)


def test_allowlist_parses_and_normalizes() -> None:
    allow = parse_allowlist(
        """
        [[allow]]
        address = "KMS.us-east-1.amazonaws.com."
        port = 443

        [[allow]]
        address = "2001:db8::1"
        port = 14000
        """
    )
    assert len(allow) == 2
    assert allow.permits(Destination.parse("kms.us-east-1.amazonaws.com:443"))
    assert allow.permits(Destination.parse("[2001:db8:0::1]:14000"))
    assert not allow.permits(Destination.parse("kms.us-east-1.amazonaws.com:80"))
    assert not allow.permits(Destination.parse("evil.us-east-1.amazonaws.com:443"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no \\[\\[allow\\]\\] entries"),
        ("allow = []", "no \\[\\[allow\\]\\] entries"),
        ("[[allow]]\naddress = 'a.example'\nport = 443\n[x]\ny=1", "unknown top-level keys"),
        ("[[allow]]\naddress = 'a.example'\nport = 443\nproto = 'tcp'", "unknown keys"),
        ("[[allow]]\nport = 443", "needs address"),
        ("[[allow]]\naddress = 'a.example'", "needs port"),
        ("[[allow]]\naddress = 'a.example'\nport = '443'", "needs port"),
        ("[[allow]]\naddress = 'a.example'\nport = 0", "1-65535"),
        ("[[allow]]\naddress = 'a.example'\nport = true", "needs port"),
        ("[[allow]]\naddress = '*.example'\nport = 443", "valid DNS name"),
        ("allowlist: [{address: a, port: 1}]", "not valid TOML"),
        ("allow = ['a.example:443']", "must be a table"),
    ],
)
def test_bad_allowlists_fail_closed(text: str, message: str) -> None:
    with pytest.raises(AllowListError, match=message):
        parse_allowlist(text)


def test_allowlist_file_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(AllowListError, match="cannot read"):
        load_allowlist(tmp_path / "missing.toml")
    with pytest.raises(AllowListError, match="empty"):
        AllowList(frozenset())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"CONNECT kms.example.com:443\n", Destination("kms.example.com", 443)),
        (b"CONNECT [::1]:443\r\n", Destination("::1", 443)),
    ],
)
def test_preamble_requests_parse(line: bytes, expected: Destination) -> None:
    assert parse_request(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"CONNECT kms.example.com:443",
        b"GET / HTTP/1.1\n",
        b"CONNECT\n",
        b"CONNECT host\n",
        b"CONNECT host:0\n",
        b"CONNECT h\xc3\xa9:443\n",
        b"CONNECT " + b"a" * 400 + b":443\n",
    ],
)
def test_malformed_preambles_are_typed(line: bytes) -> None:
    with pytest.raises(PreambleError):
        parse_request(line)


def _allow_port(port: int) -> AllowList:
    return parse_allowlist(f"[[allow]]\naddress = '127.0.0.1'\nport = {port}\n")


async def _ask(line: bytes) -> bytes:
    reader, writer = await connect(HOST_PROXY)
    writer.write(line)
    answer = await read_closed(reader)
    writer.close()
    return answer


def test_outbound_refuses_and_logs_what_is_not_allowed(
    nitrotls_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nitrotls.transport")

    async def scenario() -> tuple[bytes, bytes, bytes]:
        async with await listen(Address.tcp("127.0.0.1", 0), echo) as upstream:
            port = upstream.address.port
            proxy = ProxyServer("host outbound", HOST_PROXY, outbound_opener(_allow_port(port)))
            await proxy.start()
            try:
                other = await _ask(b"CONNECT 127.0.0.1:%d\n" % (port + 1 if port < 65535 else 1))
                named = await _ask(b"CONNECT metadata.internal.example:80\n")
                garbage = await _ask(b"\x16\x03\x01 not a preamble\n")
                return other, named, garbage
            finally:
                await proxy.stop()

    other, named, garbage = run(scenario())
    assert other == named == b"ERR not-allowed\n"
    assert garbage == b"ERR bad-request\n"
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 3
    assert "metadata.internal.example:80" in refusals[1]
    assert "not in the allow list" in refusals[1]
    assert "malformed" in refusals[2]


def test_outbound_relays_allowed_destinations_including_early_bytes(nitrotls_home: Path) -> None:
    async def scenario() -> bytes:
        async with await listen(Address.tcp("127.0.0.1", 0), echo) as upstream:
            port = upstream.address.port
            proxy = ProxyServer("host outbound", HOST_PROXY, outbound_opener(_allow_port(port)))
            await proxy.start()
            try:
                reader, writer = await connect(HOST_PROXY)
                # the first payload bytes ride in the same write as the request line
                return await exchange(
                    (reader, writer), b"CONNECT 127.0.0.1:%d\nhello upstream" % port
                )
            finally:
                await proxy.stop()

    assert run(scenario()) == b"OK\nhello upstream"


def test_outbound_reports_unreachable_allowed_destinations(
    nitrotls_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nitrotls.transport")

    async def scenario() -> tuple[int, bytes]:
        async with await listen(Address.tcp("127.0.0.1", 0), echo) as gone:
            port = gone.address.port  # closed again before anyone dials it
        proxy = ProxyServer("host outbound", HOST_PROXY, outbound_opener(_allow_port(port)))
        await proxy.start()
        try:
            return port, await _ask(b"CONNECT 127.0.0.1:%d\n" % port)
        finally:
            await proxy.stop()

    port, answer = run(scenario())
    assert answer == b"ERR unreachable\n"
    assert f"could not reach 127.0.0.1:{port}" in caplog.text


def test_fixed_destination_must_be_allowed() -> None:
    with pytest.raises(AllowListError, match="not in the allow list"):
        outbound_opener(_allow_port(443), to=Destination.parse("127.0.0.1:444"))


def test_fixed_destination_needs_no_preamble(nitrotls_home: Path) -> None:
    async def scenario() -> bytes:
        async with await listen(Address.tcp("127.0.0.1", 0), echo) as upstream:
            port = upstream.address.port
            to = Destination.parse(f"127.0.0.1:{port}")
            proxy = ProxyServer(
                "host outbound", HOST_PROXY, outbound_opener(_allow_port(port), to=to)
            )
            await proxy.start()
            try:
                return await exchange(await connect(HOST_PROXY), b"CONNECT is just data here\n")
            finally:
                await proxy.stop()

    assert run(scenario()) == b"CONNECT is just data here\n"


def test_enclave_forward_through_host_outbound_end_to_end(
    nitrotls_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nitrotls.transport")

    async def scenario() -> tuple[bytes, bytes]:
        async with await listen(Address.tcp("127.0.0.1", 0), echo) as upstream:
            port = upstream.address.port
            host = ProxyServer("host outbound", HOST_PROXY, outbound_opener(_allow_port(port)))
            allowed = ProxyServer(
                "enclave forward",
                Address.tcp("127.0.0.1", 0),
                forward_opener(HOST_PROXY, preamble=("127.0.0.1", port)),
            )
            refused = ProxyServer(
                "enclave forward",
                Address.tcp("127.0.0.1", 0),
                forward_opener(HOST_PROXY, preamble=("127.0.0.1", 1)),
            )
            for server in (host, allowed, refused):
                await server.start()
            try:
                payload = bytes(range(256)) * 1000
                through = await exchange(await connect(allowed.address), payload)
                assert through == payload
                reader, writer = await connect(refused.address)
                blocked = await read_closed(reader)
                writer.close()
                return through[:4], blocked
            finally:
                for server in (refused, allowed, host):
                    await server.stop()

    first, blocked = run(scenario())
    assert first == bytes(range(4))
    assert blocked == b""
    assert "outbound refused 127.0.0.1:1" in caplog.text
    assert "the outbound proxy refused 127.0.0.1:1: ERR not-allowed" in caplog.text


def test_forward_to_a_missing_host_proxy_drops_the_client(
    nitrotls_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nitrotls.transport")

    async def scenario() -> bytes:
        forward = ProxyServer(
            "enclave forward", Address.tcp("127.0.0.1", 0), forward_opener(HOST_PROXY)
        )
        await forward.start()
        try:
            reader, writer = await connect(forward.address)
            ended = await read_closed(reader)
            writer.close()
            return ended
        finally:
            await forward.stop()

    assert run(scenario()) == b""
    assert "vsock://3:8000" in caplog.text


def test_preamble_timeout_is_bounded(nitrotls_home: Path) -> None:
    async def scenario() -> bytes:
        opener = outbound_opener(_allow_port(443), preamble_timeout=0.1)
        proxy = ProxyServer("host outbound", HOST_PROXY, opener)
        await proxy.start()
        try:
            reader, writer = await connect(HOST_PROXY)
            writer.write(b"CONNECT 127.0.0.1")  # never finishes the line
            answer = await asyncio.wait_for(read_closed(reader), 10)
            writer.close()
            return answer
        finally:
            await proxy.stop()

    assert run(scenario()) == b"ERR bad-request\n"
