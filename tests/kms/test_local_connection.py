"""The event-driven connection: requests split anywhere across reads, answers held back while a
client does not read them, and what happens when a client stops half-way."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import pytest

from nitrotls.kms.local import LocalKMSServer
from nitrotls.kms.local.connection import BURST, Connection, Hub


class FakeTransport:
    """Records what the connection writes; calls pause_writing past ``high_water`` bytes."""

    def __init__(self, high_water: int | None = None) -> None:
        self.protocol: Connection | None = None
        self.written = bytearray()
        self.high_water = high_water
        self.closed = self.aborted = self.eof_written = self.reading_paused = False

    def write(self, data: bytes) -> None:
        self.written += data
        if self.high_water is not None and len(self.written) > self.high_water:
            self.high_water = None
            assert self.protocol is not None
            self.protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False


def connect(server: LocalKMSServer, high_water: int | None = None) -> tuple[Any, FakeTransport]:
    hub = Hub(server.service, request_timeout=30, max_request_bytes=4096, max_connections=4)
    connection = Connection(hub)
    transport = FakeTransport(high_water)
    transport.protocol = connection
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


def signed(kit: Any, server: LocalKMSServer, body: bytes = b"{}") -> bytes:
    headers = kit.sign(server.endpoint_url, "TrentService.ListKeys", body, kit.admin)
    host, port = server.address
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\n{lines}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def statuses(raw: bytes | bytearray) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def test_requests_split_at_every_byte_boundary(kit: Any, local_kms: LocalKMSServer) -> None:
    stream = signed(kit, local_kms) + b"\r\n" + signed(kit, local_kms, b'{"Limit": 5}')
    for cut in range(1, len(stream)):
        connection, transport = connect(local_kms)
        connection.data_received(stream[:cut])
        connection.data_received(stream[cut:])
        assert statuses(transport.written) == [200, 200], cut
        assert not (transport.closed or transport.aborted)


def test_one_byte_at_a_time(kit: Any, local_kms: LocalKMSServer) -> None:
    connection, transport = connect(local_kms)
    for byte in signed(kit, local_kms):
        connection.data_received(bytes([byte]))
    assert statuses(transport.written) == [200]


def test_answers_wait_while_the_client_does_not_read(kit: Any, local_kms: LocalKMSServer) -> None:
    connection, transport = connect(local_kms, high_water=10)
    connection.data_received(signed(kit, local_kms) * 3)
    assert statuses(transport.written) == [200]  # paused after the first answer
    assert transport.reading_paused
    connection.resume_writing()
    assert statuses(transport.written) == [200, 200, 200]
    assert not transport.reading_paused


def test_a_client_that_never_reads_is_dropped_at_its_deadline(
    kit: Any, local_kms: LocalKMSServer
) -> None:
    connection, transport = connect(local_kms, high_water=10)
    connection.data_received(signed(kit, local_kms) * 2)
    connection.expire()
    assert transport.aborted


def test_a_refused_request_closes_only_after_the_client_stops_sending(
    local_kms: LocalKMSServer,
) -> None:
    connection, transport = connect(local_kms)
    connection.data_received(b"POST / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n")
    assert statuses(transport.written) == [413]
    assert transport.eof_written and not transport.closed
    connection.data_received(b"x" * 5000)  # the body it was sending anyway: discarded
    assert statuses(transport.written) == [413]
    connection.eof_received()
    assert transport.closed


def half_closed_exchange(server: LocalKMSServer, data: bytes) -> bytes:
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        (b"POST / HTTP/1.1\r\nHost: x", [400]),  # inside a header line
        (b"POST / HTTP/1.1\r\nHost: x\r\n", [400]),  # between header lines
        (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n{", []),  # inside the body
        (b"", []),
    ],
    ids=["mid-line", "mid-head", "mid-body", "nothing"],
)
def test_client_closing_half_way(local_kms: LocalKMSServer, sent: bytes, answer: list[int]) -> None:
    assert statuses(half_closed_exchange(local_kms, sent)) == answer


def test_a_pipelining_client_takes_turns(kit: Any, local_kms: LocalKMSServer) -> None:
    async def scenario() -> list[int]:
        connection, transport = connect(local_kms)
        connection.data_received(signed(kit, local_kms) * (BURST + 3))
        seen = [len(statuses(transport.written))]
        assert transport.reading_paused  # the others' turn
        await asyncio.sleep(0)
        seen.append(len(statuses(transport.written)))
        assert not transport.reading_paused
        return seen

    assert asyncio.run(scenario()) == [BURST, BURST + 3]


def test_tolerated_shapes_one_blank_line_before_and_bare_line_feeds(
    kit: Any, local_kms: LocalKMSServer
) -> None:
    request = signed(kit, local_kms)
    head, _, body = request.partition(b"\r\n\r\n")
    bare = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    connection, transport = connect(local_kms)
    connection.data_received(b"\r\n" + request + bare)
    assert statuses(transport.written) == [200, 200]
    connection.data_received(b"\r\n\r\n" + request)  # two blank lines: not a request line
    assert statuses(transport.written) == [200, 200, 400]
