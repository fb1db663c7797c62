"""ACME problem documents map to one typed error per RFC 8555 type, detail included."""

from __future__ import annotations

import pytest

from nitrotls.ca import (
    PROBLEM_CLASSES,
    AcmeError,
    AcmeProblemError,
    AcmeRateLimitedError,
    CAError,
    problem_error,
)
from nitrotls.errors import NitroTLSError

RFC8555_TYPES = [
    "accountDoesNotExist", "alreadyRevoked", "badCSR", "badNonce", "badPublicKey",
    "badRevocationReason", "badSignatureAlgorithm", "caa", "compound", "connection", "dns",
    "externalAccountRequired", "incorrectResponse", "invalidContact", "malformed",
    "orderNotReady", "rateLimited", "rejectedIdentifier", "serverInternal", "tls",
    "unauthorized", "unsupportedContact", "unsupportedIdentifier", "userActionRequired",
]  # fmt: skip


@pytest.mark.parametrize("code", RFC8555_TYPES)
def test_every_rfc8555_type_has_its_own_class(code: str) -> None:
    error = problem_error(f"urn:ietf:params:acme:error:{code}", "the detail", context="ordering")
    assert type(error) is PROBLEM_CLASSES[code]
    assert type(error) is not AcmeProblemError
    assert isinstance(error, AcmeError) and isinstance(error, CAError)
    assert isinstance(error, NitroTLSError)
    assert error.detail == "the detail"
    assert error.problem_type.endswith(code)
    assert "the detail" in str(error) and code in str(error) and "ordering" in str(error)


def test_classes_are_distinct() -> None:
    assert len(set(PROBLEM_CLASSES.values())) == len(RFC8555_TYPES) == len(PROBLEM_CLASSES)


def test_unknown_types_fall_back_to_the_base() -> None:
    error = problem_error("urn:example:custom", None)
    assert type(error) is AcmeProblemError
    assert "no detail given" in str(error)
    assert type(problem_error(None, "x")) is AcmeProblemError


def test_rate_limit_status_is_kept() -> None:
    error = problem_error("urn:ietf:params:acme:error:rateLimited", "too many", status=429)
    assert isinstance(error, AcmeRateLimitedError)
    assert error.status == 429
