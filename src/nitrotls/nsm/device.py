"""``/dev/nsm``: the Nitro Security Module inside a real enclave.

One ioctl, ``_IOWR(0x0A, 0, struct nsm_message)``, where ``nsm_message`` is two ``iovec``\\s:
the CBOR request (at most 4096 bytes) and a response buffer (12288 bytes) whose ``iov_len`` the
driver sets to the length it wrote. The ioctl function is injectable so tests can run the whole
path, pointers included, against a fake module without opening the device.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nitrotls.nsm import protocol
from nitrotls.nsm.errors import NSMDeviceError, NSMInputTooLargeError
from nitrotls.nsm.source import (
    NSMDescription,
    check_bytes,
    check_index,
    check_random_length,
    optional_field,
)

DEVICE_PATH = "/dev/nsm"
NSM_IOCTL_MAGIC = 0x0A


class IOVec(ctypes.Structure):
    """``struct iovec``."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class NSMMessage(ctypes.Structure):
    """The driver's message: request and response ``iovec``\\s (32 bytes on 64-bit Linux)."""

    _fields_ = [("request", IOVec), ("response", IOVec)]


def iowr(kind: int, number: int, size: int) -> int:
    """Linux's generic ``_IOWR`` (x86_64, aarch64): dir 3 << 30 | size << 16 | type << 8 | nr."""
    read_write = 3
    return (read_write << 30) | (size << 16) | (kind << 8) | number


NSM_IOCTL_REQUEST = iowr(NSM_IOCTL_MAGIC, 0, ctypes.sizeof(NSMMessage))

#: ``ioctl(fd, request, message) -> status``; raises OSError on failure like ``fcntl.ioctl``.
IoctlFunction = Callable[[int, int, NSMMessage], int]


def _system_ioctl(fd: int, request: int, message: NSMMessage) -> int:
    return int(fcntl.ioctl(fd, request, message, True))


class DeviceNSM:
    """The real NSM. The device is opened on first use and kept open; thread-safe."""

    #: attest() waits on an ioctl: servers call it from a worker thread, not their event loop.
    blocks = True

    def __init__(
        self, path: Path | str = DEVICE_PATH, *, ioctl: IoctlFunction | None = None
    ) -> None:
        self.path = Path(path)
        self._ioctl: IoctlFunction = ioctl or _system_ioctl
        self._fd: int | None = None
        self._open_lock = threading.Lock()

    def _device(self) -> int:
        with self._open_lock:
            if self._fd is None:
                try:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
                except OSError as error:
                    raise NSMDeviceError(
                        f"cannot open the NSM device {self.path}: {error.strerror}; this runs "
                        "only inside a Nitro enclave"
                    ) from None
            return self._fd

    def close(self) -> None:
        with self._open_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> DeviceNSM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, request: object) -> Any:
        """Send one NSM API request; returns the body of its response variant."""
        name = protocol.request_name(request)
        encoded = protocol.encode_request(request)
        raw = self._exchange(encoded, name)
        return protocol.decode_response(raw, name)

    def _exchange(self, encoded: bytes, name: str) -> bytes:
        request_buffer = ctypes.create_string_buffer(encoded, len(encoded))
        response_buffer = ctypes.create_string_buffer(protocol.RESPONSE_MAX_BYTES)
        message = NSMMessage(
            IOVec(ctypes.addressof(request_buffer), len(encoded)),
            IOVec(ctypes.addressof(response_buffer), protocol.RESPONSE_MAX_BYTES),
        )
        try:
            try:
                self._ioctl(self._device(), NSM_IOCTL_REQUEST, message)
            except OSError as error:
                raise _ioctl_error(error, name) from None
            length = int(message.response.iov_len)
            if length > protocol.RESPONSE_MAX_BYTES:
                raise NSMDeviceError(
                    f"the NSM reported a {length}-byte {name} response, larger than the "
                    f"{protocol.RESPONSE_MAX_BYTES}-byte buffer",
                    code="InvalidResponse",
                )
            return ctypes.string_at(response_buffer, length)
        finally:
            ctypes.memset(response_buffer, 0, protocol.RESPONSE_MAX_BYTES)

    def attest(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        request = protocol.attestation_request(
            optional_field("user_data", user_data),
            optional_field("nonce", nonce),
            optional_field("public_key", public_key, minimum=1),
        )
        body = self.request(request)
        return bytes(protocol.field(body, "document", bytes, "Attestation"))

    def describe_pcr(self, index: int) -> tuple[bool, bytes]:
        body = self.request(protocol.describe_pcr_request(check_index(index)))
        lock = protocol.field(body, "lock", bool, "DescribePCR")
        data = protocol.field(body, "data", bytes, "DescribePCR")
        return bool(lock), bytes(data)

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        request = protocol.extend_pcr_request(check_index(index), check_bytes("data", data))
        body = self.request(request)
        return bytes(protocol.field(body, "data", bytes, "ExtendPCR"))

    def lock_pcr(self, index: int) -> None:
        self.request(protocol.lock_pcr_request(check_index(index)))

    def lock_pcrs(self, count: int) -> None:
        """Lock PCRs [0, count)."""
        self.request(protocol.lock_pcrs_request(check_index(count)))

    def get_random(self, length: int) -> bytes:
        """``length`` bytes, gathered over as many GetRandom calls as the device needs."""
        wanted = check_random_length(length)
        gathered = bytearray()
        while len(gathered) < wanted:
            body = self.request(protocol.GET_RANDOM)
            chunk = protocol.field(body, "random", bytes, "GetRandom")
            if not chunk:
                raise NSMDeviceError("the NSM returned no random bytes", code="InvalidResponse")
            gathered += chunk
        return bytes(gathered[:wanted])

    def describe(self) -> NSMDescription:
        body = self.request(protocol.DESCRIBE_NSM)
        op = "DescribeNSM"
        locked = protocol.field(body, "locked_pcrs", list, op)
        if not all(isinstance(index, int) for index in locked):
            raise NSMDeviceError("the NSM's locked_pcrs are not integers", code="InvalidResponse")
        return NSMDescription(
            protocol.field(body, "version_major", int, op),
            protocol.field(body, "version_minor", int, op),
            protocol.field(body, "version_patch", int, op),
            protocol.field(body, "module_id", str, op),
            protocol.field(body, "max_pcrs", int, op),
            frozenset(locked),
            str(protocol.field(body, "digest", str, op)),
        )

    def __repr__(self) -> str:
        return f"DeviceNSM({str(self.path)!r})"


def _ioctl_error(error: OSError, name: str) -> NSMDeviceError | NSMInputTooLargeError:
    if error.errno == errno.EMSGSIZE:
        return NSMInputTooLargeError(
            f"the NSM refused the {name} request as too large (EMSGSIZE)", code="InputTooLarge"
        )
    return NSMDeviceError(
        f"the NSM ioctl for {name} failed: {error.strerror or error}", code="InternalError"
    )
