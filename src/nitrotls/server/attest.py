"""``GET /.well-known/nitrotls/attestation?nonce=<base64url>``: proof, per connection, that the
certificate this connection was shown belongs to a measured enclave.

The answer is a fresh document from the enclave's :class:`AttestationSource` whose user_data is
the binding of ARCHITECTURE.md §4 for the leaf served on *this* connection and whose nonce is the
client's (16 to 64 bytes). Raw COSE_Sign1 (``application/cose``) by default, or
``{"document": base64}`` when the client's Accept header asks for JSON and not for COSE.
Requests are rate-limited per client address with a token bucket, because every document costs a
signature in the NSM. A source that says its next document will not block (``blocks`` is False:
the simulated NSM between certificate renewals, pure CPU under the GIL) is called on the event
loop; any other (``/dev/nsm``'s ioctl, a renewal, a source that does not say) from a worker
thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from nitrotls import binding
from nitrotls.nsm.source import AttestationSource
from nitrotls.server.identity import ServedIdentity
from nitrotls.server.metrics import Metrics

log = logging.getLogger(__name__)

ATTESTATION_PATH = b"/.well-known/nitrotls/attestation"
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*={0,2}")
_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    417: b"Expectation Failed",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


@dataclass(frozen=True)
class LocalResponse:
    """A response nitrotls writes itself (attestation, errors, health)."""

    status: int
    body: bytes
    content_type: bytes = b"text/plain; charset=utf-8"
    headers: tuple[bytes, ...] = ()

    def render(self, *, keep_alive: bool, head_only: bool = False) -> bytes:
        reason = _REASONS.get(self.status, b"Unknown")
        lines = [
            b"HTTP/1.1 %d %s" % (self.status, reason),
            b"Content-Type: " + self.content_type,
            b"Content-Length: %d" % len(self.body),
            b"Cache-Control: no-store",
            *self.headers,
        ]
        if not keep_alive:
            lines.append(b"Connection: close")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        return head if head_only else head + self.body


def error_response(status: int) -> LocalResponse:
    """A short, fixed error body: never an internal detail."""
    return LocalResponse(status, b"%d %s\n" % (status, _REASONS.get(status, b"Error")))


class RateLimiter:
    """Token buckets per client address: ``rate`` documents per second, bursts of ``burst``."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> bool:
        now = self._clock()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:
            self._forget_full(now)
        return True

    def retry_after(self, client: str) -> int:
        tokens, _ = self._buckets.get(client, (self.burst, 0.0))
        return max(1, int((1.0 - tokens) / self.rate + 0.999)) if self.rate > 0 else 60

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they carry no information."""
        full_after = self.burst / self.rate if self.rate > 0 else float("inf")
        self._buckets = {
            client: state for client, state in self._buckets.items() if now - state[1] < full_after
        }


def decode_nonce(target: bytes) -> bytes:
    """The nonce from ``?nonce=<base64url>`` (padded or not); :class:`BindingError` if absent,
    malformed or outside 16 to 64 bytes."""
    _, _, query = target.partition(b"?")
    values = [part[6:] for part in query.split(b"&") if part.startswith(b"nonce=")]
    if len(values) != 1:
        raise binding.BindingError("expected exactly one nonce=<base64url> query parameter")
    text = values[0]
    if not _BASE64URL.fullmatch(text):
        raise binding.BindingError("nonce is not base64url")
    try:
        nonce = base64.urlsafe_b64decode(text.rstrip(b"=") + b"=" * (-len(text.rstrip(b"=")) % 4))
    except (binascii.Error, ValueError):
        raise binding.BindingError("nonce is not base64url") from None
    binding.check_nonce(nonce)
    return nonce


def wants_json(accept: bytes | None) -> bool:
    """JSON only when asked for and COSE was not: COSE is the format clients rely on."""
    if not accept:
        return False
    lowered = accept.lower()
    return b"application/json" in lowered and b"application/cose" not in lowered


class AttestationResponder:
    """Answers the attestation endpoint for any HTTP-speaking mode."""

    def __init__(
        self,
        source: AttestationSource,
        metrics: Metrics,
        *,
        rate: float = 5.0,
        burst: int = 20,
    ) -> None:
        self.source = source
        self.metrics = metrics
        self.limiter = RateLimiter(rate, burst)
        self._user_data: tuple[ServedIdentity, bytes] | None = None

    @staticmethod
    def matches(target: bytes) -> bool:
        return target.partition(b"?")[0] == ATTESTATION_PATH

    async def respond(
        self,
        method: bytes,
        target: bytes,
        accept: bytes | None,
        identity: ServedIdentity,
        client: str,
    ) -> LocalResponse:
        """The full answer, never raising: failures become short error responses."""
        refused = self._precheck(method, client)
        if refused is not None:
            return refused
        try:
            nonce = decode_nonce(target)
        except binding.BindingError as error:
            self.metrics.attestation_rejected += 1
            return LocalResponse(400, f"400 Bad Request: {error}\n".encode())
        user_data = self._user_data_for(identity)
        try:
            if getattr(self.source, "blocks", True) is False:
                document = self._attest(user_data, nonce)
            else:
                document = await asyncio.to_thread(self._attest, user_data, nonce)
        except Exception as error:  # an NSM failure must not kill the connection
            log.error("attestation source failed: %s", error)
            return error_response(503)
        self.metrics.attestation_requests += 1
        if wants_json(accept):
            body = json.dumps({"document": base64.b64encode(document).decode()}).encode()
            return LocalResponse(200, body, b"application/json")
        return LocalResponse(200, document, b"application/cose")

    def _precheck(self, method: bytes, client: str) -> LocalResponse | None:
        if method not in (b"GET", b"HEAD"):
            self.metrics.attestation_rejected += 1
            return LocalResponse(405, b"405 Method Not Allowed\n", headers=(b"Allow: GET, HEAD",))
        if not self.limiter.allow(client):
            self.metrics.attestation_rejected += 1
            wait = self.limiter.retry_after(client)
            return LocalResponse(
                429, b"429 Too Many Requests\n", headers=(b"Retry-After: %d" % wait,)
            )
        return None

    def _user_data_for(self, identity: ServedIdentity) -> bytes:
        """The binding for ``identity``, encoded once per served identity (they are immutable)."""
        cached = self._user_data
        if cached is not None and cached[0] is identity:
            return cached[1]
        user_data = identity.user_data()
        self._user_data = (identity, user_data)
        return user_data

    def _attest(self, user_data: bytes, nonce: bytes) -> bytes:
        return self.source.attest(user_data=user_data, nonce=nonce)
