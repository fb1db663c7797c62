"""The generator with the local CA and the directory store, in process: issue, renew, refuse."""

from __future__ import annotations

import datetime as dt

import pytest

from generator.conftest import Deployment
from generator.helpers import assert_key_matches_leaf, open_as_main
from nitrotls.bundle import unseal
from nitrotls.ca import LocalCA
from nitrotls.generator import Runner, make_issuer
from nitrotls.kms import KMSAccessDeniedError

NAME = "web.nitrotls.test"


def test_issue_then_main_enclave_opens(deployment: Deployment) -> None:
    issuer = make_issuer(deployment.config(key_type="p384"), deployment.generator)
    outcome = Runner(issuer).once()
    assert outcome.issued and outcome.seq == 1 and outcome.name == NAME
    store = deployment.store()
    verified, key = open_as_main(deployment, store, NAME, ca_roots=[LocalCA().root_der])
    assert verified.seq == 1
    assert verified.domains == (NAME,)
    assert verified.key_type == "p384"
    assert verified.bundle.id_hex == outcome.bundle_id
    assert_key_matches_leaf(verified, key)
    # The key policy gives the TLS key to main enclaves only, not to the generator itself.
    with pytest.raises(KMSAccessDeniedError):
        unseal(verified, deployment.kms(), deployment.generator)


def test_second_run_is_not_due_and_force_renews(deployment: Deployment) -> None:
    issuer = make_issuer(deployment.config(), deployment.generator)
    first = Runner(issuer).once()
    again = Runner(issuer).once()
    assert not again.issued and "valid until" in again.reason
    forced = Runner(issuer).once(force=True)
    assert forced.issued and forced.seq == 2 and forced.bundle_id != first.bundle_id
    store = deployment.store()
    verified, _key = open_as_main(deployment, store, NAME, min_seq=2)
    assert verified.bundle.id_hex == forced.bundle_id
    assert sorted(store.list(NAME)) == sorted([first.bundle_id, forced.bundle_id])


def test_renews_when_two_thirds_have_passed(deployment: Deployment) -> None:
    issuer = make_issuer(deployment.config(renew_jitter=0.0), deployment.generator)
    Runner(issuer).once()
    decision = issuer.decision()
    assert not decision.due and decision.at is not None
    verified, _ = open_as_main(deployment, deployment.store(), NAME)
    lifetime = verified.not_after - verified.not_before
    assert abs(decision.at - (verified.not_before + lifetime * 2 / 3)) < dt.timedelta(seconds=1)
    issuer.clock = lambda: decision.at + dt.timedelta(seconds=1)  # type: ignore[method-assign]
    renewed = Runner(issuer).once()
    assert renewed.issued and renewed.seq == 2


def test_changed_domains_make_renewal_due(deployment: Deployment) -> None:
    Runner(make_issuer(deployment.config(bundle="web"), deployment.generator)).once()
    wider = make_issuer(
        deployment.config(bundle="web", domains=(NAME, "www.nitrotls.test")), deployment.generator
    )
    outcome = Runner(wider).once()
    assert outcome.issued and outcome.seq == 2
    verified, _ = open_as_main(deployment, deployment.store(), "web")
    assert set(verified.domains) == {NAME, "www.nitrotls.test"}
