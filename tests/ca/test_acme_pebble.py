"""ACME end to end against Pebble: HTTP-01 through the responder, DNS-01 through hooks,
account reuse, and server problems turned into typed errors."""

from __future__ import annotations

import base64
import logging
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from ca.ca_support import BLOCKED_DOMAIN, make_csr
from nitrotls.ca import (
    AcmeCA,
    AcmeChallengeError,
    AcmeError,
    AcmeExternalAccountRequiredError,
    AcmeRejectedIdentifierError,
    AcmeTransportError,
    AcmeUnauthorizedError,
    ChallengeServer,
    CSRError,
    ExternalAccountBinding,
    command_dns_hook,
)
from nitrotls.store import DirectoryStore

from pebble_fixtures import PebbleStack, pebble_stack

pytestmark = pytest.mark.slow


def _verify(stack: PebbleStack, chain: tuple[bytes, ...], name: str) -> None:
    """The chain must lead from the leaf to Pebble's root for ``name``."""
    certs = [x509.load_der_x509_certificate(c) for c in chain]
    verifier = (
        PolicyBuilder()
        .store(Store(stack.root_certificates()))
        .build_server_verifier(x509.DNSName(name))
    )
    verifier.verify(certs[0], certs[1:])


def _challenges(store: DirectoryStore) -> list[str]:
    folder = store.root / "challenges"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _name(label: str) -> str:
    return f"{label}-{secrets.token_hex(3)}.nitrotls.test"


def test_http01_issuance_through_the_responder(
    pebble: PebbleStack, acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    names = [_name("web"), _name("www")]
    csr, key = make_csr(names)
    with AcmeCA(
        pebble.directory_url, account_key, ca_bundle=pebble.ca_bundle, http01_publisher=acme_store
    ) as ca:
        account = ca.account()
        assert account.uri.startswith(pebble.directory_url.rsplit("/", 1)[0])
        assert account.status == "valid"
        started = time.perf_counter()
        chain = ca.issue(csr)
        elapsed = time.perf_counter() - started
    print(f"\nHTTP-01 issuance against Pebble (account excluded): {elapsed * 1000:.0f} ms")
    assert len(chain) >= 2
    leaf = x509.load_der_x509_certificate(chain[0])
    assert leaf.public_key() == key.public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)
    for name in names:
        _verify(pebble, chain, name)
    assert _challenges(acme_store) == []  # tokens removed after validation


def test_chain_verification_would_catch_a_wrong_root(
    pebble: PebbleStack, acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    name = _name("pin")
    csr, _ = make_csr([name])
    with AcmeCA(
        pebble.directory_url, account_key, ca_bundle=pebble.ca_bundle, http01_publisher=acme_store
    ) as ca:
        chain = ca.issue(csr)
    from nitrotls.ca import LocalCA

    other_root = LocalCA().root_certificate
    verifier = PolicyBuilder().store(Store([other_root])).build_server_verifier(x509.DNSName(name))
    certs = [x509.load_der_x509_certificate(c) for c in chain]
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(certs[0], certs[1:])


HOOK = """
import json, sys, urllib.request
url, log_path, action, record, value = sys.argv[1:6]
with open(log_path, "a") as log:
    log.write(f"{action} {record}\\n")
if action == "add":
    endpoint, body = "set-txt", {"host": record + ".", "value": value}
else:
    endpoint, body = "clear-txt", {"host": record + "."}
request = urllib.request.Request(f"{url}/{endpoint}", data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(request, timeout=5).read()
"""


def test_dns01_issuance_via_a_hook_command(
    pebble: PebbleStack, tmp_path: Path, account_key: ec.EllipticCurvePrivateKey
) -> None:
    script = tmp_path / "dns-hook.py"
    script.write_text(HOOK)
    calls = tmp_path / "calls.log"
    base = _name("dns")
    names = [base, f"*.{base}"]
    csr, key = make_csr(names)
    hook = command_dns_hook([sys.executable, str(script), pebble.challtestsrv_url, str(calls)])
    with AcmeCA(
        pebble.directory_url,
        account_key,
        ca_bundle=pebble.ca_bundle,
        challenge="dns-01",
        dns_hook=hook,
    ) as ca:
        chain = ca.issue(csr)
    leaf = x509.load_der_x509_certificate(chain[0])
    assert leaf.public_key() == key.public_key()
    _verify(pebble, chain, base)
    _verify(pebble, chain, f"anything.{base}")
    lines = calls.read_text().splitlines()
    record = f"_acme-challenge.{base}"
    assert lines.count(f"add {record}") == 2  # one TXT value per authorization
    assert lines.count(f"remove {record}") == 2


def test_dns01_with_a_python_callable(
    pebble: PebbleStack, account_key: ec.EllipticCurvePrivateKey
) -> None:
    calls: list[tuple[str, str]] = []

    def hook(action: str, record: str, value: str) -> None:
        calls.append((action, record))
        if action == "add":
            pebble.set_txt(record, value)
        else:
            pebble.clear_txt(record)

    name = _name("callable")
    csr, _ = make_csr([name])
    with AcmeCA(
        pebble.directory_url,
        account_key,
        ca_bundle=pebble.ca_bundle,
        challenge="dns-01",
        dns_hook=hook,
    ) as ca:
        _verify(pebble, ca.issue(csr), name)
    assert calls == [("add", f"_acme-challenge.{name}"), ("remove", f"_acme-challenge.{name}")]


def test_missing_txt_record_is_a_typed_problem(
    pebble: PebbleStack, account_key: ec.EllipticCurvePrivateKey
) -> None:
    csr, _ = make_csr([_name("notxt")])
    with (
        AcmeCA(
            pebble.directory_url,
            account_key,
            ca_bundle=pebble.ca_bundle,
            challenge="dns-01",
            dns_hook=lambda action, record, value: None,
        ) as ca,
        pytest.raises(AcmeUnauthorizedError, match="TXT") as caught,
    ):
        ca.issue(csr)
    assert "dns-01" in str(caught.value)


def test_account_is_reused_across_runs(
    pebble: PebbleStack,
    acme_store: DirectoryStore,
    account_key: ec.EllipticCurvePrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with AcmeCA(
        pebble.directory_url, account_key, ca_bundle=pebble.ca_bundle, http01_publisher=acme_store
    ) as first:
        account = first.account()
        _verify(pebble, first.issue(make_csr([n := _name("reuse")])[0]), n)
    # same key, no URI: the CA finds the existing account instead of making a new one
    with AcmeCA(
        pebble.directory_url, account_key, ca_bundle=pebble.ca_bundle, http01_publisher=acme_store
    ) as found:
        assert found.account().uri == account.uri
    # same key and the saved URI: no registration request at all
    from acme.client import ClientV2

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("registered again although the account URI was given")

    monkeypatch.setattr(ClientV2, "new_account", refuse)
    with AcmeCA(
        pebble.directory_url,
        account_key,
        ca_bundle=pebble.ca_bundle,
        http01_publisher=acme_store,
        account_uri=account.uri,
    ) as reused:
        assert reused.account().uri == account.uri
        _verify(pebble, reused.issue(make_csr([n := _name("reuse2")])[0]), n)


def test_an_account_the_ca_forgot_is_registered_again(
    pebble: PebbleStack, acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    stale = pebble.directory_url.rsplit("/", 1)[0] + "/my-account/0123456789abcdef"
    with AcmeCA(
        pebble.directory_url,
        account_key,
        ca_bundle=pebble.ca_bundle,
        http01_publisher=acme_store,
        account_uri=stale,
    ) as ca:
        _verify(pebble, ca.issue(make_csr([n := _name("forgot")])[0]), n)
        assert ca.account().uri != stale
        assert ca.account().status == "valid"


def test_blocked_name_is_rejected_identifier(
    pebble: PebbleStack, acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    csr, _ = make_csr([BLOCKED_DOMAIN])
    with (
        AcmeCA(
            pebble.directory_url,
            account_key,
            ca_bundle=pebble.ca_bundle,
            http01_publisher=acme_store,
        ) as ca,
        pytest.raises(AcmeRejectedIdentifierError) as caught,
    ):
        ca.issue(csr)
    assert caught.value.problem_type == "urn:ietf:params:acme:error:rejectedIdentifier"
    assert caught.value.detail


class WrongAnswers:
    """A publisher that serves a key authorization for the wrong account."""

    def __init__(self, store: DirectoryStore) -> None:
        self.store = store
        self.tokens: list[str] = []

    def put_challenge(self, token: str, key_authorization: str) -> None:
        self.tokens.append(token)
        self.store.put_challenge(token, token + ".not-the-right-thumbprint")

    def delete_challenge(self, token: str) -> None:
        self.store.delete_challenge(token)


def test_wrong_key_authorization_is_unauthorized_and_cleaned_up(
    pebble: PebbleStack, acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    publisher = WrongAnswers(acme_store)
    csr, _ = make_csr([_name("wrong")])
    with (
        AcmeCA(
            pebble.directory_url,
            account_key,
            ca_bundle=pebble.ca_bundle,
            http01_publisher=publisher,
        ) as ca,
        pytest.raises(AcmeUnauthorizedError, match="http-01") as caught,
    ):
        ca.issue(csr)
    assert caught.value.detail
    assert publisher.tokens  # the responder did serve something, and Pebble checked it
    assert _challenges(acme_store) == []


def test_publisher_failure_is_a_challenge_error(
    pebble: PebbleStack, account_key: ec.EllipticCurvePrivateKey
) -> None:
    class Down:
        def put_challenge(self, token: str, key_authorization: str) -> None:
            raise OSError("disk full")

        def delete_challenge(self, token: str) -> None:
            pass

    with (
        AcmeCA(
            pebble.directory_url, account_key, ca_bundle=pebble.ca_bundle, http01_publisher=Down()
        ) as ca,
        pytest.raises(AcmeChallengeError, match="disk full"),
    ):
        ca.issue(make_csr([_name("down")])[0])


def test_dns01_is_not_offered_for_ip_addresses(
    pebble: PebbleStack, account_key: ec.EllipticCurvePrivateKey
) -> None:
    with (
        AcmeCA(
            pebble.directory_url,
            account_key,
            ca_bundle=pebble.ca_bundle,
            challenge="dns-01",
            dns_hook=lambda *args: None,
        ) as ca,
        pytest.raises(AcmeChallengeError, match="offers no dns-01"),
    ):
        ca.issue(make_csr(["127.0.0.1"])[0])


def test_ip_address_issuance_over_http01(
    pebble: PebbleStack, acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    import ipaddress

    with AcmeCA(
        pebble.directory_url, account_key, ca_bundle=pebble.ca_bundle, http01_publisher=acme_store
    ) as ca:
        chain = ca.issue(make_csr(["127.0.0.1"])[0])
    leaf = x509.load_der_x509_certificate(chain[0])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_untrusted_tls_is_a_transport_error(
    pebble: PebbleStack,
    acme_store: DirectoryStore,
    account_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
) -> None:
    from pebble_fixtures import make_tls_files

    other_ca, _, _ = make_tls_files(tmp_path)
    with (
        AcmeCA(
            pebble.directory_url, account_key, ca_bundle=other_ca, http01_publisher=acme_store
        ) as ca,
        pytest.raises(AcmeTransportError, match="ca_bundle"),
    ):
        ca.account()


def test_unreachable_ca_is_a_transport_error(
    acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    with (
        AcmeCA("https://127.0.0.1:9/dir", account_key, http01_publisher=acme_store) as ca,
        pytest.raises(AcmeTransportError, match="cannot reach"),
    ):
        ca.account()


# -- a stricter Pebble: external account binding required, half the nonces rejected -------------

EAB_KID = "kid-nitrotls"
EAB_KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def strict_pebble(
    tmp_path_factory: pytest.TempPathFactory, responder: ChallengeServer, pebble: PebbleStack
) -> Iterator[PebbleStack]:
    with pebble_stack(
        tmp_path_factory.mktemp("strict-pebble"),
        http_port=int(responder.server_address[1]),
        env={"PEBBLE_WFE_NONCEREJECT": "50"},
        eab_keys={EAB_KID: EAB_KEY},
    ) as stack:
        yield stack


def test_eab_required_and_bad_nonces_retried(
    strict_pebble: PebbleStack,
    acme_store: DirectoryStore,
    account_key: ec.EllipticCurvePrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        AcmeCA(
            strict_pebble.directory_url,
            account_key,
            ca_bundle=strict_pebble.ca_bundle,
            http01_publisher=acme_store,
        ) as ca,
        pytest.raises(AcmeExternalAccountRequiredError),
    ):
        ca.account()
    caplog.set_level(logging.DEBUG, logger="acme.client")
    caplog.set_level(logging.DEBUG, logger="nitrotls.ca")
    with AcmeCA(
        strict_pebble.directory_url,
        account_key,
        ca_bundle=strict_pebble.ca_bundle,
        http01_publisher=acme_store,
        eab=ExternalAccountBinding(EAB_KID, EAB_KEY),
        contact=["ops@nitrotls.test"],
    ) as ca:
        assert ca.account().status == "valid"
        name = _name("strict")
        _verify(strict_pebble, ca.issue(make_csr([name])[0]), name)
    retried = [
        r
        for r in caplog.records
        if "badNonce" in r.getMessage() or "Retrying request" in r.getMessage()
    ]
    assert retried, "Pebble rejected no nonce at 50%? the retry path went untested"


def test_wrong_eab_key_is_refused(
    strict_pebble: PebbleStack, acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    wrong = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    with (
        AcmeCA(
            strict_pebble.directory_url,
            account_key,
            ca_bundle=strict_pebble.ca_bundle,
            http01_publisher=acme_store,
            eab=ExternalAccountBinding(EAB_KID, wrong),
        ) as ca,
        pytest.raises(AcmeUnauthorizedError),
    ):
        ca.account()


def test_order_first_then_finish_with_the_csr(
    pebble: PebbleStack, acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    """begin() orders and publishes challenges before the key exists; finish() takes the CSR."""
    names = [_name("early")]
    with AcmeCA(
        pebble.directory_url, account_key, ca_bundle=pebble.ca_bundle, http01_publisher=acme_store
    ) as ca:
        pending = ca.begin(names)
        assert _challenges(acme_store)  # published while the key would be made and sealed
        csr, key = make_csr(names)
        chain = pending.finish(csr)
        with pytest.raises(AcmeError, match="already finished or abandoned"):
            pending.finish(csr)
    assert x509.load_der_x509_certificate(chain[0]).public_key() == key.public_key()
    _verify(pebble, chain, names[0])
    assert _challenges(acme_store) == []


def test_a_csr_for_other_names_is_refused(
    pebble: PebbleStack, acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    with AcmeCA(
        pebble.directory_url, account_key, ca_bundle=pebble.ca_bundle, http01_publisher=acme_store
    ) as ca:
        pending = ca.begin([_name("ordered")])
        try:
            other_csr, _ = make_csr([_name("other")])
            with pytest.raises(CSRError):
                pending.finish(other_csr)
        finally:
            pending.abandon()
    assert _challenges(acme_store) == []


def test_abandon_withdraws_the_challenges(
    pebble: PebbleStack, acme_store: DirectoryStore, account_key: ec.EllipticCurvePrivateKey
) -> None:
    with AcmeCA(
        pebble.directory_url, account_key, ca_bundle=pebble.ca_bundle, http01_publisher=acme_store
    ) as ca:
        pending = ca.begin([_name("dropped")])
        assert _challenges(acme_store)
        pending.abandon()
        pending.abandon()  # safe to call again
        assert _challenges(acme_store) == []
        csr, _ = make_csr(list(pending.names.dns))
        with pytest.raises(AcmeError, match="already finished or abandoned"):
            pending.finish(csr)
