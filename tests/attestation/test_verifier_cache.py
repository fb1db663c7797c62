"""The proven-certificate cache saves signature work and never turns a refusal into acceptance."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest

from attestation.attestation_forge import (
    LEAF_USAGE,
    NOW,
    Authority,
    Spec,
    aws_shaped_specs,
    build_chain,
    document,
    issue,
    name,
)
from attestation.attestation_vectors import Vector
from nitrotls.attestation import (
    AttestationError,
    BrokenChainError,
    CertificateExpiredError,
    SignatureError,
    Verifier,
)
from nitrotls.attestation import (
    chain as chain_module,
)


@pytest.fixture
def link_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every certificate signature check the chain verifier performs."""
    calls: list[str] = []
    real: Callable[..., None] = chain_module.check_issued

    def counting(child: Any, issuer: Any, where: str) -> None:
        calls.append(where)
        real(child, issuer, where)

    monkeypatch.setattr(chain_module, "check_issued", counting)
    return calls


def test_repeated_document_costs_no_chain_signature(production: Vector, link_checks) -> None:
    verifier = Verifier()
    verifier.authenticate(production.data, at=production.at)
    assert len(link_checks) == 4  # regional, zonal, instance, leaf
    verifier.authenticate(production.data, at=production.at)
    assert len(link_checks) == 4


def test_new_leaf_under_cached_intermediates_costs_one_check(forged_chain, link_checks) -> None:
    verifier = Verifier(trusted_roots=(forged_chain[0].fingerprint,))
    verifier.authenticate(document(forged_chain), at=NOW)
    new_leaf = issue(Spec(name("leaf 2"), ca=False, usage=LEAF_USAGE), forged_chain[3])
    verifier.authenticate(document([*forged_chain[:-1], new_leaf]), at=NOW)
    assert link_checks == ["cabundle[1]", "cabundle[2]", "cabundle[3]", "certificate"] * 1 + [
        "certificate"
    ]


def test_validity_is_checked_on_every_call(production: Vector) -> None:
    verifier = Verifier()
    verifier.authenticate(production.data, at=production.at)
    with pytest.raises(CertificateExpiredError):
        verifier.authenticate(production.data)
    with pytest.raises(CertificateExpiredError):
        verifier.authenticate(production.data, at=production.at - dt.timedelta(days=400))


def test_signature_is_checked_on_every_call(production: Vector) -> None:
    verifier = Verifier()
    verifier.authenticate(production.data, at=production.at)
    tampered = bytearray(production.data)
    tampered[-1] ^= 1
    with pytest.raises(SignatureError):
        verifier.authenticate(bytes(tampered), at=production.at)


def test_cached_leaf_under_another_issuer_is_checked_again(forged_chain) -> None:
    verifier = Verifier(trusted_roots=(forged_chain[0].fingerprint,))
    verifier.authenticate(document(forged_chain), at=NOW)
    # Same subject as the instance CA, other key: the cached leaf DER must not vouch for it.
    impostor = issue(dataclasses.replace(aws_shaped_specs()[3]), forged_chain[2])
    with pytest.raises(BrokenChainError, match="does not verify"):
        verifier.authenticate(document([*forged_chain[:3], impostor, forged_chain[4]]), at=NOW)


def test_failures_are_not_cached(forged_chain, link_checks) -> None:
    verifier = Verifier(trusted_roots=(forged_chain[0].fingerprint,))
    stranger = build_chain(aws_shaped_specs())[-1]
    bad = document([*forged_chain[:-1], stranger])
    for _ in range(2):
        with pytest.raises(BrokenChainError):
            verifier.authenticate(bad, at=NOW)
    assert link_checks.count("certificate") == 2
    verifier.authenticate(document(forged_chain), at=NOW)


def test_cached_leaf_cannot_act_as_an_issuer(forged_chain) -> None:
    verifier = Verifier(trusted_roots=(forged_chain[0].fingerprint,))
    verifier.authenticate(document(forged_chain), at=NOW)
    grandchild = issue(Spec(name("below leaf"), ca=False, usage=LEAF_USAGE), forged_chain[4])
    with pytest.raises(BrokenChainError, match=r"expected a CA|pathLenConstraint"):
        verifier.authenticate(document([*forged_chain, grandchild]), at=NOW)


def test_path_length_is_checked_on_every_call(forged_chain) -> None:
    verifier = Verifier(trusted_roots=(forged_chain[0].fingerprint,))
    verifier.authenticate(document(forged_chain), at=NOW)
    # A CA under the (cached) instance CA, whose pathLen is 0, then a leaf below it.
    extra = issue(Spec(name("extra CA"), path_length=0), forged_chain[3])
    leaf = issue(Spec(name("leaf"), ca=False, usage=LEAF_USAGE), extra)
    with pytest.raises(
        BrokenChainError, match="pathLenConstraint 2 allows at most 2 CAs below it, found 3"
    ):
        verifier.authenticate(document([*forged_chain[:4], extra, leaf]), at=NOW)


def test_tiny_cache_still_verifies_correctly(forged_chain, link_checks) -> None:
    verifier = Verifier(trusted_roots=(forged_chain[0].fingerprint,), cache_entries=1)
    for _ in range(3):
        verifier.authenticate(document(forged_chain), at=NOW)
    assert len(link_checks) > 4  # evicted links were proven again


def test_clear_cache_forgets(production: Vector, link_checks) -> None:
    verifier = Verifier()
    verifier.authenticate(production.data, at=production.at)
    verifier.clear_cache()
    verifier.authenticate(production.data, at=production.at)
    assert len(link_checks) == 8


def test_concurrent_use_is_consistent(production: Vector, forged_chain) -> None:
    verifier = Verifier()
    stranger: list[Authority] = build_chain(aws_shaped_specs())
    bad = document(stranger)
    outcomes: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(5):
            verifier.authenticate(production.data, at=production.at)
            try:
                verifier.authenticate(bad, at=NOW)
                result = "accepted"
            except AttestationError as error:
                result = type(error).__name__
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["UntrustedRootError"] * 30
