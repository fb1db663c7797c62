"""The TLS-terminating reverse proxy: framing, keep-alive, forwarding headers, faults, limits."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from nitrotls.server.identity import ContextHolder
from nitrotls.server.listener import ListenSettings
from nitrotls.server.proxy import ProxySettings

from .conftest import (
    PKI,
    Exchange,
    open_tls,
    port_of,
    proxy_options,
    read_response,
    running,
    served_from,
    upstream_server,
)

options = proxy_options  # proxy-mode ServeOptions (tests/server/conftest.py)


def client(pki: PKI, port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"https://localhost:{port}", verify=pki.client_context())


def test_get_is_proxied_with_forwarding_headers(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as server:
            port = port_of(server)
            async with client(pki, port) as http:
                answer = await http.get(
                    "/path?q=1", headers={"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=x"}
                )
            assert answer.status_code == 200
            seen = answer.json()
            headers = {k.lower(): v for k, v in seen["headers"]}
            assert seen["target"] == "/path?q=1"
            assert headers["x-forwarded-for"] == "127.0.0.1"
            assert headers["x-forwarded-proto"] == "https"
            assert headers["x-forwarded-host"] == f"localhost:{port}"
            assert headers["host"] == f"localhost:{port}"
            assert "forwarded" not in headers
            assert [k for k, _ in seen["headers"]].count("x-forwarded-for") == 1

    asyncio.run(scenario())


def test_keep_alive_on_both_sides(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as server:
            reader, writer = await open_tls(port_of(server), pki.client_context())
            for index in range(5):
                writer.write(f"GET /{index} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                status, headers, body = await read_response(reader)
                assert status == 200
                assert json.loads(body)["target"] == f"/{index}"
                assert "connection" not in headers
            writer.close()
            assert up.connections == 1
            assert up.requests == 5

    asyncio.run(scenario())


def test_pipelined_requests_answered_in_order(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as server:
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(
                b"".join(
                    f"GET /p{i} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode() for i in range(3)
                )
            )
            for index in range(3):
                _, _, body = await read_response(reader)
                assert json.loads(body)["target"] == f"/p{index}"
            writer.close()

    asyncio.run(scenario())


def test_request_bodies_content_length_and_chunked(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as server:
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(b"POST /cl HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello")
            await asyncio.sleep(0)
            writer.write(b" world")
            _, _, body = await read_response(reader)
            assert json.loads(body)["body"] == "hello world"
            writer.write(
                b"POST /ch HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5;ext=1\r\nhello\r\n"
            )
            await asyncio.sleep(0)
            writer.write(b"6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
            _, _, body = await read_response(reader)
            seen = json.loads(body)
            assert seen["body"] == "hello world"
            assert not any(k.lower() == "x-trailer" for k, _ in seen["headers"])
            writer.close()

    asyncio.run(scenario())


def test_chunked_response_is_streamed(pki: PKI) -> None:
    """The first piece reaches the client while upstream still holds back the rest."""
    release = asyncio.Event

    async def scenario() -> None:
        gate = release()

        async def streaming(exchange: Exchange) -> None:
            import h11

            exchange.writer.write(
                exchange.conn.send(
                    h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")])
                )
            )
            exchange.writer.write(exchange.conn.send(h11.Data(data=b"first;")))
            await exchange.writer.drain()
            await gate.wait()
            exchange.writer.write(exchange.conn.send(h11.Data(data=b"second")))
            exchange.writer.write(exchange.conn.send(h11.EndOfMessage()))
            await exchange.writer.drain()

        holder = ContextHolder(served_from(pki.issue()))
        async with (
            upstream_server(streaming) as up,
            running(options(up.url), holder) as server,
        ):
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            received = b""
            while b"first;" not in received:
                received += await asyncio.wait_for(reader.read(4096), 10)
            assert b"Transfer-Encoding: chunked" in received
            assert b"second" not in received
            gate.set()
            while not received.endswith(b"0\r\n\r\n"):
                received += await asyncio.wait_for(reader.read(4096), 10)
            assert b"second" in received
            writer.close()

    asyncio.run(scenario())


def test_close_delimited_response_rechunked_for_http11(pki: PKI) -> None:
    async def close_delimited(exchange: Exchange) -> None:
        await exchange.reply(200, b"until close", headers=[])

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with (
            upstream_server(close_delimited) as up,
            running(options(up.url), holder) as s,
        ):
            reader, writer = await open_tls(port_of(s), pki.client_context())
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            status, headers, body = await read_response(reader)
            assert status == 200
            assert headers.get("transfer-encoding") == "chunked"
            assert body == b"until close"
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")  # client side stays alive
            status, _, body = await read_response(reader)
            assert (status, body) == (200, b"until close")
            writer.close()

    asyncio.run(scenario())


def test_http10_client(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as server:
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(b"GET /old HTTP/1.0\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 10)  # server closes: HTTP/1.0
            assert data.startswith(b"HTTP/1.1 200")
            assert b"Connection: close" in data
            assert b'"/old"' in data

    asyncio.run(scenario())


def test_head_and_empty_bodies(pki: PKI) -> None:
    async def empty(exchange: Exchange) -> None:
        if exchange.request.method == b"HEAD":
            await exchange.reply(200, headers=[("Content-Length", "42")])
        else:
            await exchange.reply(200, b"", headers=[("Content-Length", "0")])

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with (
            upstream_server(empty) as up,
            running(options(up.url), holder) as server,
            client(pki, port_of(server)) as http,
        ):
            head = await http.head("/")
            assert head.status_code == 200
            assert head.headers["content-length"] == "42"
            get = await http.get("/")
            assert get.status_code == 200 and get.content == b""

    asyncio.run(scenario())


def test_expect_100_continue(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as server:
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(
                b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
            )
            line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert line.startswith(b"HTTP/1.1 100")
            writer.write(b"data")
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["body"] == "data"
            writer.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 400),
        (b"GET http://evil/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ],
)
def test_bad_requests_refused(pki: PKI, request_bytes: bytes, status: int) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as server:
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(request_bytes)
            data = await asyncio.wait_for(reader.read(), 10)
            assert data.startswith(b"HTTP/1.1 %d " % status), data[:80]
            assert up.requests == 0

    asyncio.run(scenario())


def test_upstream_down_is_502_without_internals(pki: PKI) -> None:
    async def scenario() -> None:
        import socket

        spare = socket.socket()
        spare.bind(("127.0.0.1", 0))
        dead_port = spare.getsockname()[1]
        spare.close()  # nothing listens there now
        holder = ContextHolder(served_from(pki.issue()))
        async with running(options(f"http://127.0.0.1:{dead_port}"), holder) as server:
            async with client(pki, port_of(server)) as http:
                answer = await http.get("/")
            assert answer.status_code == 502
            assert answer.text == "502 Bad Gateway\n"
            assert server.metrics.upstream_errors == 1

    asyncio.run(scenario())


def test_stale_pooled_connection_is_retried(pki: PKI) -> None:
    """Upstream drops idle keep-alive sockets silently; GETs still succeed."""

    async def reply_then_drop(exchange: Exchange) -> None:
        await exchange.reply(200, b"ok")
        loop = asyncio.get_running_loop()
        loop.call_soon(exchange.writer.transport.abort)

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with (
            upstream_server(reply_then_drop) as up,
            running(options(up.url), holder) as s,
        ):
            async with client(pki, port_of(s)) as http:
                for _ in range(4):
                    answer = await http.get("/")
                    assert (answer.status_code, answer.text) == (200, "ok")
                    await asyncio.sleep(0.05)
            assert up.requests == 4

    asyncio.run(scenario())


def test_upstream_silence_is_504(pki: PKI) -> None:
    async def silent(exchange: Exchange) -> None:
        await asyncio.sleep(30)

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        settings = ProxySettings(upstream_timeout=0.3)
        async with (
            upstream_server(silent) as up,
            running(options(up.url, proxy=settings), holder) as server,
        ):
            async with client(pki, port_of(server)) as http:
                answer = await http.get("/")
            assert answer.status_code == 504
            assert server.metrics.timeouts == 1

    asyncio.run(scenario())


def test_slowloris_cut_off_while_others_served(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        settings = ProxySettings(header_timeout=0.5, body_timeout=0.5)
        async with (
            upstream_server() as up,
            running(options(up.url, proxy=settings), holder) as server,
        ):
            port = port_of(server)
            slow_reader, slow_writer = await open_tls(port, pki.client_context())
            body_reader, body_writer = await open_tls(port, pki.client_context())
            body_writer.write(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nx")

            async def dribble() -> bytes:
                for byte in b"GET / HTTP/1.1\r\nHost: slow\r\n":
                    slow_writer.write(bytes([byte]))
                    await asyncio.sleep(0.05)
                    if slow_reader.at_eof():
                        break
                return await slow_reader.read()

            dribbler = asyncio.create_task(dribble())
            served = 0
            async with client(pki, port) as http:
                while not dribbler.done():
                    answer = await http.get("/fast")
                    assert answer.status_code == 200
                    served += 1
                    await asyncio.sleep(0.02)
            cut = await asyncio.wait_for(dribbler, 10)
            assert cut.startswith(b"HTTP/1.1 408")
            body_cut = await asyncio.wait_for(body_reader.read(), 10)
            assert body_cut.startswith(b"HTTP/1.1 408")
            assert served > 0
            assert server.metrics.timeouts == 2

    asyncio.run(scenario())


def test_idle_keep_alive_connection_closed(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        settings = ProxySettings(idle_timeout=0.3)
        async with (
            upstream_server() as up,
            running(options(up.url, proxy=settings), holder) as server,
        ):
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            status, _, _ = await read_response(reader)
            assert status == 200
            assert await asyncio.wait_for(reader.read(), 10) == b""

    asyncio.run(scenario())


def test_connection_limit_holds_extra_clients_in_backlog(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        limits = ListenSettings(max_connections=2, tick=0.05)
        async with (
            upstream_server() as up,
            running(options(up.url, listener=limits), holder) as s,
        ):
            port = port_of(s)
            first = await open_tls(port, pki.client_context())
            second = await open_tls(port, pki.client_context())
            third = asyncio.create_task(open_tls(port, pki.client_context()))
            await asyncio.sleep(0.3)
            assert not third.done()
            assert s.metrics.connections_active == 2
            first[1].close()
            reader, writer = await asyncio.wait_for(third, 10)
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            status, _, _ = await read_response(reader)
            assert status == 200
            writer.close()
            second[1].close()

    asyncio.run(scenario())


def test_graceful_shutdown_finishes_open_requests(pki: PKI) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        arrived = asyncio.Event()

        async def slow(exchange: Exchange) -> None:
            arrived.set()
            await gate.wait()
            await exchange.reply(200, b"finished")

        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server(slow) as up:
            server_cm = running(options(up.url, grace=10.0), holder)
            server = await server_cm.__aenter__()
            port = port_of(server)
            reader, writer = await open_tls(port, pki.client_context())
            idle_reader, _idle_writer = await open_tls(port, pki.client_context())
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            await arrived.wait()
            stopping = asyncio.create_task(server_cm.__aexit__(None, None, None))
            assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # idle: closed at once
            with pytest.raises(OSError):
                await open_tls(port, pki.client_context())
            gate.set()
            status, headers, body = await read_response(reader)
            assert (status, body) == (200, b"finished")
            assert headers.get("connection") == "close"
            await asyncio.wait_for(stopping, 10)

    asyncio.run(scenario())


def test_websocket_style_upgrade_tunnels(pki: PKI) -> None:
    async def upgrade(exchange: Exchange) -> None:
        import h11

        exchange.writer.write(
            exchange.conn.send(
                h11.InformationalResponse(
                    status_code=101, headers=[("Upgrade", "echo"), ("Connection", "upgrade")]
                )
            )
        )
        await exchange.writer.drain()
        # After 101 the h11 connection is SWITCHED_PROTOCOL: the raw stream is ours.
        data, _ = exchange.conn.trailing_data
        assert exchange.reader is not None
        while len(data) < 2:
            data += await exchange.reader.read(2 - len(data))
        exchange.writer.write(data.upper())
        await exchange.writer.drain()

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server(upgrade) as up, running(options(up.url), holder) as server:
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhi"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 101")
            assert await asyncio.wait_for(reader.readexactly(2), 10) == b"HI"
            writer.close()

    asyncio.run(scenario())


def test_proxy_protocol_v2_gives_the_client_address(pki: PKI) -> None:
    from nitrotls.transport.proxy_protocol import ProxyHeader, encode

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        limits = ListenSettings(proxy_protocol=True, proxy_header_timeout=2.0, tick=0.05)
        async with (
            upstream_server() as up,
            running(options(up.url, listener=limits), holder) as s,
        ):
            port = port_of(s)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            header = ProxyHeader("PROXY", ("203.0.113.7", 40000), ("10.0.0.1", 443))
            writer.write(encode(header))
            await writer.start_tls(pki.client_context(), server_hostname="localhost")
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, _, body = await read_response(reader)
            assert status == 200
            headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
            assert headers["x-forwarded-for"] == "203.0.113.7"
            writer.close()
            # Without the header the connection is refused before any TLS.
            bad_reader, bad_writer = await asyncio.open_connection("127.0.0.1", port)
            bad_writer.write(b"\x16\x03\x01" + b"\x00" * 40)
            try:
                leftover = await asyncio.wait_for(bad_reader.read(), 10)
            except ConnectionResetError:
                leftover = b""
            assert leftover == b""
            assert s.metrics.handshake_failures == 1

    asyncio.run(scenario())


def test_core_paths_under_uvloop(pki: PKI) -> None:
    """`nitrotls serve` runs on uvloop: the same exchanges work there."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as server:
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
            writer.write(b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"3\r\nabc\r\n0\r\n\r\n")
            first = await read_response(reader)
            second = await read_response(reader)
            assert json.loads(first[2])["target"] == "/a"
            assert json.loads(second[2])["body"] == "abc"
            assert up.connections == 1
            writer.close()

    uvloop.run(scenario())
