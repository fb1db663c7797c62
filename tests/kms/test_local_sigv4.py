"""SigV4 verification against requests signed by botocore's own signer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from nitrotls.kms.local.errors import ServiceError
from nitrotls.kms.local.sigv4 import Credential, WireRequest, authenticate

ALICE = Credential("AKIDALICE", "alice-secret", "arn:aws:iam::111122223333:role/alice")
BOB = Credential("AKIDBOB", "bob-secret", "arn:aws:iam::444455556666:user/bob")
KNOWN = {c.access_key: c for c in (ALICE, BOB)}


def signed(
    credential: Credential = ALICE,
    *,
    secret: str | None = None,
    body: bytes = b'{"KeyId": "alias/x"}',
    url: str = "http://127.0.0.1:7800/",
    service: str = "kms",
) -> WireRequest:
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "X-Amz-Target": "TrentService.DescribeKey",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    keys = Credentials(credential.access_key, secret or credential.secret)
    SigV4Auth(keys, service, "eu-west-1").add_auth(request)
    parts = urlsplit(url)
    headers = {name.lower(): str(value) for name, value in request.headers.items()}
    headers["host"] = parts.netloc
    return WireRequest("POST", parts.path, parts.query, headers, body)


def code_of(request: WireRequest, now: datetime | None = None) -> str:
    with pytest.raises(ServiceError) as caught:
        authenticate(request, KNOWN, now)
    return caught.value.code


def test_valid_signatures_name_their_principal() -> None:
    assert authenticate(signed(ALICE), KNOWN) == ALICE
    assert authenticate(signed(BOB), KNOWN).principal == BOB.principal


def test_path_and_query_are_canonicalised_like_botocore() -> None:
    request = signed(url="http://localhost:7800/a%20b/./c?b=2&a=1&a=0&e=%2F")
    assert authenticate(request, KNOWN) == ALICE


def test_wrong_secret_is_an_invalid_signature() -> None:
    assert code_of(signed(ALICE, secret="bob-secret")) == "InvalidSignatureException"


def test_unknown_access_key_is_unrecognized() -> None:
    stranger = Credential("AKIDNOBODY", "x", ALICE.principal)
    assert code_of(signed(stranger)) == "UnrecognizedClientException"


def test_body_changed_after_signing_fails() -> None:
    request = signed()
    forged = WireRequest(request.method, request.path, request.query, request.headers, b"{}")
    assert code_of(forged) == "InvalidSignatureException"


def test_signed_header_changed_after_signing_fails() -> None:
    request = signed()
    headers = {**request.headers, "x-amz-target": "TrentService.Decrypt"}
    forged = WireRequest(request.method, request.path, request.query, headers, request.body)
    assert code_of(forged) == "InvalidSignatureException"


def test_signed_header_missing_fails() -> None:
    request = signed()
    headers = {k: v for k, v in request.headers.items() if k != "x-amz-target"}
    forged = WireRequest(request.method, request.path, request.query, headers, request.body)
    assert code_of(forged) == "InvalidSignatureException"


def test_missing_and_malformed_authorization() -> None:
    request = signed()
    bare = {k: v for k, v in request.headers.items() if k != "authorization"}
    assert code_of(WireRequest("POST", "/", "", bare, b"")) == "MissingAuthenticationTokenException"
    garbled = {**bare, "authorization": "AWS4-HMAC-SHA256 Credential=x, Signature=zz"}
    assert code_of(WireRequest("POST", "/", "", garbled, b"")) == "IncompleteSignatureException"
    short_scope = {**request.headers}
    short_scope["authorization"] = request.headers["authorization"].replace("/kms/", "/")
    assert code_of(WireRequest("POST", "/", "", short_scope, b"")) == (
        "IncompleteSignatureException"
    )


def test_other_service_scope_is_refused() -> None:
    assert code_of(signed(service="s3")) == "InvalidSignatureException"


def test_requests_older_than_fifteen_minutes_are_refused() -> None:
    request = signed()
    sent = datetime.strptime(request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert authenticate(request, KNOWN, sent + timedelta(minutes=14)) == ALICE
    assert authenticate(request, KNOWN, sent - timedelta(minutes=14)) == ALICE
    assert code_of(request, sent + timedelta(minutes=16)) == "InvalidSignatureException"
    assert code_of(request, sent - timedelta(minutes=16)) == "InvalidSignatureException"


def test_date_header_must_match_the_scope() -> None:
    request = signed()
    headers = {**request.headers, "x-amz-date": "20000101T000000Z"}
    forged = WireRequest("POST", "/", "", headers, request.body)
    assert code_of(forged) == "InvalidSignatureException"
    headers["x-amz-date"] = "yesterday"
    assert code_of(WireRequest("POST", "/", "", headers, request.body)) == (
        "IncompleteSignatureException"
    )
