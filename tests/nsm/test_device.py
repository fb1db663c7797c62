"""DeviceNSM against a fake NSM behind the real ioctl plumbing (pointers, lengths, CBOR).

The fake reads the request through the iovec pointer, answers as the NSM API does and writes
its CBOR answer into the response buffer, setting iov_len like the driver. /dev/nsm is never
opened: the device path is an empty temp file.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest

from nitrotls.nsm import (
    DeviceNSM,
    NSMArgumentError,
    NSMDeviceError,
    NSMInputTooLargeError,
    PCRIndexError,
    PCRLockedError,
)
from nitrotls.nsm.device import NSM_IOCTL_REQUEST, NSMMessage, iowr
from nitrotls.nsm.errors import NSMError

ZERO = bytes(48)


class FakeNSM:
    """A minimal NSM: 32 PCRs (0..15 locked), attestation echoes the request's fields."""

    def __init__(self) -> None:
        self.pcrs = [ZERO] * 32
        self.locked = set(range(16))
        self.requests: list[Any] = []
        self.override: Callable[[Any], bytes] | None = None
        self.fds: list[int] = []

    def __call__(self, fd: int, request: int, message: NSMMessage) -> int:
        assert request == NSM_IOCTL_REQUEST
        self.fds.append(fd)
        raw = ctypes.string_at(message.request.iov_base, message.request.iov_len)
        decoded = cbor2.loads(raw)
        self.requests.append(decoded)
        answer = self.override(decoded) if self.override else cbor2.dumps(self.answer(decoded))
        assert len(answer) <= message.response.iov_len
        ctypes.memmove(message.response.iov_base, answer, len(answer))
        message.response.iov_len = len(answer)
        return 0

    def answer(self, request: Any) -> Any:
        if request == "GetRandom":
            return {"GetRandom": {"random": bytes(range(7))}}
        if request == "DescribeNSM":
            return {
                "DescribeNSM": {
                    "version_major": 1,
                    "version_minor": 0,
                    "version_patch": 0,
                    "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
                    "max_pcrs": 32,
                    "locked_pcrs": sorted(self.locked),
                    "digest": "SHA384",
                }
            }
        ((name, body),) = request.items()
        if name == "Attestation":
            return {"Attestation": {"document": cbor2.dumps(body)}}
        index = body.get("index", 0)
        if index >= 32:
            return {"Error": "InvalidIndex"}
        if name == "DescribePCR":
            return {"DescribePCR": {"lock": index in self.locked, "data": self.pcrs[index]}}
        if name == "ExtendPCR":
            if index in self.locked:
                return {"Error": "ReadOnlyIndex"}
            self.pcrs[index] = hashlib.sha384(self.pcrs[index] + body["data"]).digest()
            return {"ExtendPCR": {"data": self.pcrs[index]}}
        if name == "LockPCR":
            self.locked.add(index)
            return "LockPCR"
        return {"Error": "InvalidOperation"}


@pytest.fixture
def fake() -> FakeNSM:
    return FakeNSM()


@pytest.fixture
def device(tmp_path: Path, fake: FakeNSM) -> DeviceNSM:
    path = tmp_path / "nsm"
    path.write_bytes(b"")
    return DeviceNSM(path, ioctl=fake)


def test_ioctl_request_code_is_iowr_0x0a_0_of_a_32_byte_message() -> None:
    assert ctypes.sizeof(NSMMessage) == 32
    assert NSM_IOCTL_REQUEST == 0xC0200A00
    # _IOWR: direction read|write (3) in bits 30-31, size in 16-29, type in 8-15, number in 0-7.
    assert iowr(0x0A, 0, 32) >> 30 == 3
    assert (iowr(0x0A, 0, 32) >> 16) & 0x3FFF == 32
    assert (iowr(0x0A, 0, 32) >> 8) & 0xFF == 0x0A


def test_attestation_request_carries_fields_and_nulls(device: DeviceNSM, fake: FakeNSM) -> None:
    document = device.attest(user_data=b"u", nonce=b"n" * 16)
    assert cbor2.loads(document) == {"user_data": b"u", "nonce": b"n" * 16, "public_key": None}
    assert fake.requests[-1] == {
        "Attestation": {"user_data": b"u", "nonce": b"n" * 16, "public_key": None}
    }


def test_pcr_operations_round_trip(device: DeviceNSM, fake: FakeNSM) -> None:
    assert device.describe_pcr(3) == (True, ZERO)
    value = device.extend_pcr(16, b"data")
    assert value == hashlib.sha384(ZERO + b"data").digest()
    assert fake.requests[-1] == {"ExtendPCR": {"index": 16, "data": b"data"}}
    device.lock_pcr(16)
    assert fake.requests[-1] == {"LockPCR": {"index": 16}}
    assert device.describe_pcr(16) == (True, value)
    assert device.describe().locked_pcrs == frozenset(range(17))


def test_typed_errors_from_the_module(device: DeviceNSM) -> None:
    with pytest.raises(PCRLockedError) as locked:
        device.extend_pcr(2, b"x")
    assert locked.value.code == "ReadOnlyIndex"
    with pytest.raises(PCRIndexError) as index:
        device.describe_pcr(40)
    assert index.value.code == "InvalidIndex"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InvalidArgument", NSMArgumentError),
        ("InvalidIndex", PCRIndexError),
        ("ReadOnlyIndex", PCRLockedError),
        ("InputTooLarge", NSMInputTooLargeError),
        ("InvalidResponse", NSMDeviceError),
        ("InvalidOperation", NSMDeviceError),
        ("BufferTooSmall", NSMDeviceError),
        ("InternalError", NSMDeviceError),
        ("SomethingNew", NSMDeviceError),
    ],
)
def test_every_error_code_maps_to_its_typed_error(
    device: DeviceNSM, fake: FakeNSM, code: str, kind: type[NSMError]
) -> None:
    fake.override = lambda _request: cbor2.dumps({"Error": code})
    with pytest.raises(kind) as raised:
        device.attest()
    assert type(raised.value) is kind
    assert raised.value.code == code
    assert code in str(raised.value)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"\xff\xff", "not valid CBOR"),
        (cbor2.dumps({"Attestation": {"document": b"d"}}) + b"\x00", "trailing"),
        (cbor2.dumps({"DescribePCR": {"lock": True, "data": ZERO}}), "unexpected response"),
        (cbor2.dumps({"Attestation": {"doc": b"d"}}), "'document'"),
        (cbor2.dumps({"Attestation": {"document": "text"}}), "'document'"),
        (cbor2.dumps(["Attestation"]), "unexpected response"),
    ],
)
def test_malformed_responses_are_device_errors(
    device: DeviceNSM, fake: FakeNSM, answer: bytes, message: str
) -> None:
    fake.override = lambda _request: answer
    with pytest.raises(NSMDeviceError, match=message):
        device.attest()


def test_ioctl_failures(device: DeviceNSM, fake: FakeNSM) -> None:
    def too_big(fd: int, request: int, message: NSMMessage) -> int:
        raise OSError(errno.EMSGSIZE, "Message too long")

    def broken(fd: int, request: int, message: NSMMessage) -> int:
        raise OSError(errno.EIO, "Input/output error")

    def overlong(fd: int, request: int, message: NSMMessage) -> int:
        message.response.iov_len = 0x3001
        return 0

    for ioctl, kind, text in [
        (too_big, NSMInputTooLargeError, "EMSGSIZE"),
        (broken, NSMDeviceError, "Input/output error"),
        (overlong, NSMDeviceError, "larger than"),
    ]:
        nsm = DeviceNSM(device.path, ioctl=ioctl)
        with pytest.raises(kind, match=text):
            nsm.describe_pcr(0)
        nsm.close()


def test_oversized_requests_never_reach_the_device(device: DeviceNSM, fake: FakeNSM) -> None:
    with pytest.raises(NSMInputTooLargeError, match="4096"):
        device.extend_pcr(16, b"x" * 4096)
    with pytest.raises(NSMInputTooLargeError, match="512"):
        device.attest(user_data=b"x" * 513)
    assert fake.requests == []


def test_get_random_gathers_chunks(device: DeviceNSM, fake: FakeNSM) -> None:
    data = device.get_random(20)
    assert data == (bytes(range(7)) * 3)[:20]
    assert fake.requests == ["GetRandom"] * 3
    fake.override = lambda _request: cbor2.dumps({"GetRandom": {"random": b""}})
    with pytest.raises(NSMDeviceError, match="no random bytes"):
        device.get_random(1)


def test_device_opened_lazily_once_and_closed(tmp_path: Path, fake: FakeNSM) -> None:
    missing = DeviceNSM(tmp_path / "absent", ioctl=fake)
    with pytest.raises(NSMDeviceError, match="cannot open the NSM device"):
        missing.describe_pcr(0)
    path = tmp_path / "nsm"
    path.write_bytes(b"")
    with DeviceNSM(path, ioctl=fake) as nsm:
        nsm.describe_pcr(0)
        nsm.describe_pcr(1)
    assert len(set(fake.fds)) == 1
