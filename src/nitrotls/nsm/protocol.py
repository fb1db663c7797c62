"""The NSM API's CBOR messages (aws-nitro-enclaves-nsm-api ``Request`` / ``Response``).

Requests are serde-style externally tagged enums: a unit variant is its name as a text string
(``"DescribeNSM"``, ``"GetRandom"``), a struct variant a one-entry map from its name to its
fields (``{"ExtendPCR": {"index": 16, "data": h'..'}}``). Responses use the same shape, and a
failure is ``{"Error": "<ErrorCode>"}``.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from nitrotls.nsm.errors import (
    NSMArgumentError,
    NSMDeviceError,
    NSMError,
    NSMInputTooLargeError,
    PCRIndexError,
    PCRLockedError,
)

REQUEST_MAX_BYTES = 0x1000
RESPONSE_MAX_BYTES = 0x3000
DESCRIBE_NSM = "DescribeNSM"
GET_RANDOM = "GetRandom"

_ERRORS: dict[str, tuple[type[NSMError], str]] = {
    "InvalidArgument": (NSMArgumentError, "the NSM refused an argument as invalid"),
    "InvalidIndex": (PCRIndexError, "the PCR index is outside the NSM's bank"),
    "ReadOnlyIndex": (PCRLockedError, "the PCR is locked (read-only)"),
    "InputTooLarge": (NSMInputTooLargeError, "the request is too large for the NSM"),
    "InvalidResponse": (NSMDeviceError, "the NSM's response did not match the request"),
    "InvalidOperation": (NSMDeviceError, "the NSM cannot perform this operation"),
    "BufferTooSmall": (NSMDeviceError, "the response did not fit the 12288-byte buffer"),
    "InternalError": (NSMDeviceError, "the NSM reported an internal error"),
}


def attestation_request(
    user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
) -> dict[str, Any]:
    return {"Attestation": {"user_data": user_data, "nonce": nonce, "public_key": public_key}}


def describe_pcr_request(index: int) -> dict[str, Any]:
    return {"DescribePCR": {"index": index}}


def extend_pcr_request(index: int, data: bytes) -> dict[str, Any]:
    return {"ExtendPCR": {"index": index, "data": data}}


def lock_pcr_request(index: int) -> dict[str, Any]:
    return {"LockPCR": {"index": index}}


def lock_pcrs_request(count: int) -> dict[str, Any]:
    return {"LockPCRs": {"range": count}}


def encode_request(request: object) -> bytes:
    """CBOR of ``request``, refused above the device's 4096-byte request limit."""
    encoded = bytes(cbor2.dumps(request))
    if len(encoded) > REQUEST_MAX_BYTES:
        raise NSMInputTooLargeError(
            f"the NSM request is {len(encoded)} bytes; the device accepts at most "
            f"{REQUEST_MAX_BYTES}",
            code="InputTooLarge",
        )
    return encoded


def request_name(request: object) -> str:
    """The variant name of an encoded-to-be request (for matching the response)."""
    if isinstance(request, str):
        return request
    if isinstance(request, dict) and len(request) == 1:
        return str(next(iter(request)))
    raise NSMArgumentError(f"not an NSM request: {request!r}")


def decode_response(raw: bytes, expected: str) -> Any:
    """The body of the ``expected`` response variant; ``{"Error": …}`` raises its typed error."""
    value = _loads_exactly(raw)
    if isinstance(value, dict) and len(value) == 1:
        ((name, body),) = value.items()
        if name == "Error":
            raise error_for(body, expected)
        if name == expected:
            return body
    elif isinstance(value, str) and value == expected:
        return None
    raise NSMDeviceError(
        f"the NSM answered a {expected} request with an unexpected response "
        f"({_shape(value)}); expected {expected} or Error",
        code="InvalidResponse",
    )


def error_for(code: object, operation: str) -> NSMError:
    """The typed error for an NSM ``ErrorCode``."""
    if isinstance(code, str) and code in _ERRORS:
        kind, meaning = _ERRORS[code]
        return kind(f"{operation} failed: {meaning} (NSM error {code})", code=code)
    return NSMDeviceError(f"{operation} failed with an unknown NSM error {code!r}", code=str(code))


def field(body: Any, name: str, kind: type | tuple[type, ...], operation: str) -> Any:
    """One typed field of a response body, or a device error naming what was wrong."""
    if not isinstance(body, dict) or name not in body or not isinstance(body[name], kind):
        raise NSMDeviceError(
            f"the NSM's {operation} response lacks a valid {name!r} field ({_shape(body)})",
            code="InvalidResponse",
        )
    return body[name]


def _loads_exactly(raw: bytes) -> Any:
    stream = io.BytesIO(raw)
    try:
        value = cbor2.CBORDecoder(stream, max_depth=16).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
        raise NSMDeviceError(
            f"the NSM's response is not valid CBOR ({len(raw)} bytes)", code="InvalidResponse"
        ) from None
    if stream.tell() != len(raw):
        raise NSMDeviceError(
            f"the NSM's response has {len(raw) - stream.tell()} trailing bytes",
            code="InvalidResponse",
        )
    return value


def _shape(value: object) -> str:
    if isinstance(value, dict):
        return "map with keys " + ", ".join(repr(key) for key in list(value)[:5])
    return type(value).__name__
