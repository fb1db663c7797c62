"""ACME timing without a server: the backoff schedule, Retry-After, the deadline."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest
import requests
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nitrotls.ca import AcmeCA, AcmeChallengeError, AcmeError, AcmeTimeoutError, Backoff, acme_ca
from nitrotls.ca.errors import AcmeUnauthorizedError


def test_backoff_starts_small_and_is_capped() -> None:
    delays = Backoff().delays()
    first = [next(delays) for _ in range(12)]
    assert first[0] == pytest.approx(0.05)
    assert first == sorted(first)
    assert max(first) == pytest.approx(1.0)


def _response(retry_after: str | None) -> requests.Response:
    response = requests.Response()
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


def test_retry_after_seconds_dates_and_cap() -> None:
    assert acme_ca._retry_after(_response(None), 5) is None
    assert acme_ca._retry_after(_response("2"), 5) == 2
    assert acme_ca._retry_after(_response("120"), 5) == 5
    assert acme_ca._retry_after(_response("junk"), 5) is None
    soon = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 1 <= (acme_ca._retry_after(_response(soon), 5) or 0) <= 3
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert acme_ca._retry_after(_response(past), 5) == 0


def test_deadline_raises_a_typed_timeout() -> None:
    deadline = acme_ca._Deadline(0.0, "issuing for a.test")
    with pytest.raises(AcmeTimeoutError, match="validating"):
        deadline.sleep(0.01, "validating challenges")


def _authz(status: str) -> messages.AuthorizationResource:
    return messages.AuthorizationResource(
        uri="https://ca.test/authz/1",
        body=messages.Authorization.from_json(
            {
                "identifier": {"type": "dns", "value": "a.test"},
                "status": status,
                "challenges": [
                    {
                        "type": "http-01",
                        "url": "https://ca.test/chall/1",
                        "token": "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
                        "status": status,
                        **(
                            {
                                "error": {
                                    "type": "urn:ietf:params:acme:error:unauthorized",
                                    "detail": "wrong key authorization",
                                }
                            }
                            if status == "invalid"
                            else {}
                        ),
                    }
                ],
            }
        ),
    )


class FakeClient:
    """Answers authorization polls from a script: (status, Retry-After) per poll."""

    def __init__(self, script: list[tuple[str, str | None]]) -> None:
        self.script = list(script)
        self.polls = 0

    def poll(self, authzr: Any) -> tuple[messages.AuthorizationResource, requests.Response]:
        self.polls += 1
        status, retry_after = self.script.pop(0)
        return _authz(status), _response(retry_after)


def _ca(client: FakeClient, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> AcmeCA:
    ca = AcmeCA(
        "https://ca.test/dir",
        ec.generate_private_key(ec.SECP256R1()),
        http01_publisher=object(),  # type: ignore[arg-type]
        timeout=30,
    )
    monkeypatch.setattr(ca, "_acme", lambda: client)
    monkeypatch.setattr(acme_ca.time, "sleep", sleeps.append)
    return ca


def test_polling_backs_off_from_50ms_and_honours_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = FakeClient(
        [("pending", None), ("pending", None), ("pending", "2"), ("pending", "60"), ("valid", None)]
    )
    sleeps: list[float] = []
    ca = _ca(client, monkeypatch, sleeps)
    order = messages.OrderResource(authorizations=[_authz("pending")])
    ca._await_authorizations(order, acme_ca._Deadline(30, "test"))
    assert client.polls == 5
    assert sleeps[0] == pytest.approx(0.05)
    assert sleeps[1] == pytest.approx(0.075)
    assert sleeps[2] == pytest.approx(2.0)  # Retry-After honoured
    assert sleeps[3] == pytest.approx(Backoff().retry_after_cap)  # ... up to the cap


def test_invalid_authorization_raises_the_challenge_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = FakeClient([("pending", None), ("invalid", None)])
    ca = _ca(client, monkeypatch, [])
    order = messages.OrderResource(authorizations=[_authz("pending")])
    with pytest.raises(AcmeUnauthorizedError, match="wrong key authorization") as caught:
        ca._await_authorizations(order, acme_ca._Deadline(30, "test"))
    assert "a.test" in str(caught.value) and "http-01" in str(caught.value)


def test_constructor_checks() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AcmeChallengeError, match="publisher"):
        AcmeCA("https://ca.test/dir", key)
    with pytest.raises(AcmeChallengeError, match="hook"):
        AcmeCA("https://ca.test/dir", key, challenge="dns-01")
    with pytest.raises(AcmeChallengeError, match="tls-alpn-01"):
        AcmeCA("https://ca.test/dir", key, challenge="tls-alpn-01")
    with pytest.raises(AcmeError, match="2048"):
        AcmeCA(
            "https://ca.test/dir",
            rsa.generate_private_key(public_exponent=65537, key_size=1024),
            dns_hook=lambda *a: None,
            challenge="dns-01",
        )
    with pytest.raises(AcmeError, match="secp521r1"):
        AcmeCA(
            "https://ca.test/dir",
            ec.generate_private_key(ec.SECP521R1()),
            dns_hook=lambda *a: None,
            challenge="dns-01",
        )


def test_eab_hmac_key_is_not_in_repr() -> None:
    from nitrotls.ca import ExternalAccountBinding

    assert "s3cr3t" not in repr(ExternalAccountBinding("kid", "s3cr3t"))
