"""Server-side check of AWS Signature Version 4 (header form, ``AWS4-HMAC-SHA256``).

The local KMS authenticates callers the way AWS does, so a client that works against it works
against AWS with real credentials and nothing else changes. We rebuild the canonical request from
what arrived on the wire (method, path, query, the headers the client says it signed, and the
SHA-256 of the body we actually read), derive the signing key from the configured secret and
compare signatures in constant time. Presigned URLs (query-string auth) are not accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from urllib.parse import quote, unquote

from nitrotls.kms.local.errors import ServiceError

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "kms"
MAX_SKEW = timedelta(minutes=15)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AMZ_DATE_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$")
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+"
    r"Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*"
    r"Signature=(?P<signature>[0-9a-fA-F]{64})\s*$"
)


@dataclass(frozen=True)
class Credential:
    """One access key the server accepts, and the principal it stands for."""

    access_key: str
    secret: str = field(repr=False)
    principal: str

    @cached_property
    def account(self) -> str:
        """The 12-digit account of the principal ARN (``arn:aws:iam::ACCOUNT:...``)."""
        return account_of(self.principal)


def account_of(arn: str) -> str:
    parts = arn.split(":", 5)
    return parts[4] if len(parts) == 6 else ""


@dataclass(frozen=True)
class WireRequest:
    """What the signature covers, as received: header names lower-case, repeats comma-joined."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


def _incomplete(message: str) -> ServiceError:
    return ServiceError("IncompleteSignatureException", message)


def _invalid(message: str) -> ServiceError:
    return ServiceError("InvalidSignatureException", message)


def authenticate(
    request: WireRequest,
    credentials: Mapping[str, Credential],
    now: datetime | None = None,
) -> Credential:
    """Return the credential whose secret produced the request's signature, or raise.

    Errors follow AWS: no Authorization header → MissingAuthenticationTokenException, a header
    that does not parse → IncompleteSignatureException, an unknown access key →
    UnrecognizedClientException, anything that does not verify → InvalidSignatureException.
    """
    header = request.headers.get("authorization")
    if not header:
        raise ServiceError(
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token (sign it with SigV4).",
        )
    match = _AUTH_RE.match(header.strip())
    if match is None:
        raise _incomplete(
            "Authorization header must be 'AWS4-HMAC-SHA256 Credential=..., "
            "SignedHeaders=..., Signature=<64 hex>'."
        )
    access_key, scope = _parse_credential(match["credential"])
    amz_date = _request_time(request, scope, now or datetime.now(UTC))
    signed = match["signed"].lower()
    credential = credentials.get(access_key)
    if credential is None:
        raise ServiceError(
            "UnrecognizedClientException",
            "The security token included in the request is invalid (unknown access key).",
        )
    expected = signature(credential.secret, amz_date, scope, canonical_request(request, signed))
    if not hmac.compare_digest(expected.encode(), match["signature"].lower().encode()):
        raise _invalid(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return credential


def _parse_credential(value: str) -> tuple[str, tuple[str, str, str, str]]:
    parts = value.split("/")
    if len(parts) != 5 or not all(parts):
        raise _incomplete("Credential must be ACCESS_KEY/YYYYMMDD/REGION/kms/aws4_request.")
    access_key, day, region, service, terminator = parts
    if terminator != "aws4_request":
        raise _invalid("Credential should be scoped with a valid terminator: 'aws4_request'.")
    if service != SERVICE:
        raise _invalid(f"Credential should be scoped to correct service: '{SERVICE}'.")
    return access_key, (day, region, service, terminator)


def _request_time(request: WireRequest, scope: tuple[str, str, str, str], now: datetime) -> str:
    amz_date = request.headers.get("x-amz-date", "").strip()
    when = _amz_time(amz_date)
    if scope[0] != amz_date[:8]:
        raise _invalid("Credential date does not match the X-Amz-Date header.")
    if abs(now - when) > MAX_SKEW:
        raise _invalid(
            f"Signature expired: {amz_date} is more than 15 minutes from the server time "
            f"{now.strftime(_AMZ_DATE)} (check the client's clock)."
        )
    return amz_date


@lru_cache(maxsize=16)
def _amz_time(amz_date: str) -> datetime:
    """The instant an X-Amz-Date names (requests in the same second share one parse)."""
    match = _AMZ_DATE_RE.match(amz_date)
    try:
        if match is None:
            raise ValueError(amz_date)
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise _incomplete("X-Amz-Date header must be present as YYYYMMDDTHHMMSSZ.") from None


def canonical_request(request: WireRequest, signed_headers: str) -> str:
    names = signed_headers.split(";")
    if names != sorted(set(names)) or "host" not in names:
        raise _invalid("SignedHeaders must be sorted, unique, and include 'host'.")
    headers = request.headers
    lines = []
    for name in names:
        value = headers.get(name)
        if value is None:
            raise _invalid(f"Header {name!r} is listed in SignedHeaders but was not sent.")
        lines.append(f"{name}:{' '.join(value.split())}\n")  # trimmed, inner runs collapsed
    return "\n".join(
        [
            request.method.upper(),
            "/" if request.path == "/" else _canonical_uri(request.path),
            _canonical_query(request.query) if request.query else "",
            "".join(lines),
            signed_headers,
            hashlib.sha256(request.body).hexdigest(),
        ]
    )


def _canonical_uri(path: str) -> str:
    segments: list[str] = []
    for segment in (path or "/").split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    normalised = "/" + "/".join(segments)
    if path.endswith("/") and normalised != "/":
        normalised += "/"
    return quote(normalised, safe="/~")


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((_uri_encode(unquote(name)), _uri_encode(unquote(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def signature(secret: str, amz_date: str, scope: tuple[str, str, str, str], canonical: str) -> str:
    """The hex signature over ``canonical`` for the given secret and credential scope."""
    string_to_sign = "\n".join(
        [
            ALGORITHM,
            amz_date,
            "/".join(scope),
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    mac = _signer(secret, *scope).copy()
    mac.update(string_to_sign.encode())
    return mac.hexdigest()


@lru_cache(maxsize=64)
def _signer(secret: str, day: str, region: str, service: str, terminator: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with the day's signing key, copied for each request: the key
    derivation (four HMACs) and the keyed state are made once per credential and day."""
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, terminator):
        key = hmac.digest(key, part.encode(), "sha256")
    return hmac.new(key, digestmod=hashlib.sha256)
