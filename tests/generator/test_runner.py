"""Retries with back-off while the previous bundle stays in force; the lease; the daemon loop."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from generator.conftest import Deployment
from nitrotls.ca import AcmeServerInternalError, LocalCA
from nitrotls.generator import (
    Backoff,
    IssuanceFailedError,
    Issuer,
    LeaseUnavailableError,
    Plan,
    Runner,
    StepLog,
)
from nitrotls.generator.authority import Authority
from nitrotls.kms.client import KMSClient
from nitrotls.store import BundleStore

NAME = "web.nitrotls.test"
FAST = Backoff(initial=0.01, maximum=0.02)


class FlakyCA:
    """The local CA, failing the first ``failures`` requests like a CA in trouble."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self._ca = LocalCA()

    def issue(self, csr: bytes) -> tuple[bytes, ...]:
        self.calls += 1
        if self.calls <= self.failures:
            raise AcmeServerInternalError(
                "the CA had an internal error; try later",
                problem_type="urn:ietf:params:acme:error:serverInternal",
                detail="try later",
            )
        return self._ca.issue(csr)


def issuer(
    deployment: Deployment,
    ca: Authority,
    *,
    store: BundleStore | None = None,
    kms: KMSClient | None = None,
    **settings: object,
) -> Issuer:
    config = deployment.config(**settings)
    return Issuer(
        Plan.from_config(config.generator, config.kms.key_id),
        config.generator,
        source=deployment.generator,
        kms=kms or deployment.kms(),
        store=store or deployment.store(),
        authority=lambda: ca,
        log=StepLog(),
    )


def test_ca_failures_are_retried_and_then_succeed(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    ca = FlakyCA(failures=2)
    outcome = Runner(issuer(deployment, ca, retry_attempts=3), backoff=FAST).once()
    assert outcome.issued and ca.calls == 3
    retries = [r for r in caplog.records if getattr(r, "step", None) == "retry"]
    assert len(retries) == 2
    assert "previous bundle stays in force" in retries[0].getMessage()


def test_exhausted_retries_leave_the_previous_bundle(deployment: Deployment) -> None:
    store = deployment.store()
    first = Runner(issuer(deployment, FlakyCA(0), store=store), backoff=FAST).once()
    broken = FlakyCA(failures=10)
    with pytest.raises(IssuanceFailedError, match=r"failed 3 times.*stays in force"):
        Runner(issuer(deployment, broken, store=store, retry_attempts=3), backoff=FAST).once(
            force=True
        )
    assert broken.calls == 3
    latest = store.latest(NAME)
    assert latest is not None and latest.id == first.bundle_id
    assert store.list(NAME) == [first.bundle_id]


def test_kms_outage_is_retried_then_reported(deployment: Deployment) -> None:
    dead = KMSClient(endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout=0.5)
    with pytest.raises(IssuanceFailedError, match="KMSUnavailableError"):
        Runner(issuer(deployment, LocalCA(), kms=dead, retry_attempts=2), backoff=FAST).once()
    assert deployment.store().latest(NAME) is None


def test_a_held_lease_is_waited_for_then_reported(deployment: Deployment) -> None:
    store = deployment.store()
    held = store.acquire_lease(NAME, "other-generator", 30)
    blocked = issuer(deployment, LocalCA(), store=store, lease_wait=0.3, retry_attempts=1)
    started = time.monotonic()
    with pytest.raises(IssuanceFailedError) as caught:
        Runner(blocked, backoff=FAST).once()
    assert isinstance(caught.value.__cause__, LeaseUnavailableError)
    assert time.monotonic() - started >= 0.3
    assert store.latest(NAME) is None
    store.release_lease(held)
    assert Runner(blocked, backoff=FAST).once().issued


def test_daemon_issues_then_renews_when_due_and_stops(deployment: Deployment) -> None:
    now = [dt.datetime.now(dt.UTC)]
    worker = issuer(deployment, LocalCA(), check_interval=0.05, renew_jitter=0.0)
    worker.clock = lambda: now[0]  # type: ignore[method-assign]
    stop = threading.Event()
    runner = Runner(worker, stop=stop, backoff=FAST)
    thread = threading.Thread(target=runner.forever, daemon=True)
    thread.start()
    store = deployment.store()
    try:
        deadline = time.monotonic() + 30
        while store.latest(NAME) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first = store.latest(NAME)
        assert first is not None
        time.sleep(0.2)  # several looks at the store: nothing is due yet
        assert store.list(NAME) == [first.id]
        now[0] += dt.timedelta(days=61)  # past two thirds of 90 days
        while len(store.list(NAME)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(store.list(NAME)) == 2
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
