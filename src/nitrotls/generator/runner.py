"""Running the generator: ``--once`` (bounded retries) or as a daemon (renew, sleep, repeat).

CA, KMS and store failures are retried with exponential back-off and jitter; meanwhile the
previous bundle stays in force, because nothing is published until an issuance completes.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from nitrotls.attestation import parse_document
from nitrotls.ca import CAError, CSRError
from nitrotls.generator.errors import IssuanceFailedError, LeaseUnavailableError
from nitrotls.generator.issuer import Issuer, Outcome
from nitrotls.generator.steps import StepLog
from nitrotls.kms import KMSError
from nitrotls.nsm import AttestationSource
from nitrotls.store import InvalidStoreNameError, StoreError, StoreSpecError

RETRYABLE: tuple[type[BaseException], ...] = (
    KMSError,
    CAError,
    StoreError,
    LeaseUnavailableError,
)
PERMANENT: tuple[type[BaseException], ...] = (CSRError, InvalidStoreNameError, StoreSpecError)
MIN_SLEEP = 1.0


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with full jitter between ``initial`` and ``maximum`` seconds."""

    initial: float
    maximum: float
    uniform: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        ceiling = min(self.maximum, self.initial * 2.0 ** min(attempt, 32))
        return max(self.initial / 2, self.uniform() * ceiling)


def identify(source: AttestationSource, log: StepLog) -> None:
    """Log who this enclave is (its PCRs), so an operator can write the key policy."""
    document = parse_document(source.attest()).document
    pcrs = " ".join(
        f"PCR{i}={document.pcrs[i].hex()[:16]}…" for i in (0, 1, 2) if i in document.pcrs
    )
    mode = " (debug mode: production verifiers refuse it)" if document.is_debug else ""
    log.step(
        "attest",
        f"generator enclave {document.module_id}: {pcrs}{mode}",
        module_id=document.module_id,
        pcrs={str(i): v.hex() for i, v in sorted(document.pcrs.items()) if i in (0, 1, 2, 8)},
    )


class Runner:
    """Drives an :class:`Issuer` with retries, once or forever."""

    def __init__(
        self,
        issuer: Issuer,
        *,
        log: StepLog | None = None,
        stop: threading.Event | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.issuer = issuer
        settings = issuer.settings
        self._log = log or StepLog()
        self._stop = stop or threading.Event()
        self._backoff = backoff or Backoff(settings.retry_initial, settings.retry_max)

    def once(self, *, force: bool = False) -> Outcome:
        """Issue if due (or forced), retrying up to ``retry_attempts`` times, then return."""
        return self._with_retries(force=force, attempts=self.issuer.settings.retry_attempts)

    def forever(self, *, force: bool = False) -> None:
        """Renew whenever due until ``stop`` is set; failures are retried without giving up."""
        first = True
        while not self._stop.is_set():
            try:
                self._with_retries(force=force and first, attempts=None)
            except IssuanceFailedError:  # only when stopped mid-retry
                return
            first = False
            self._sleep_until_due()

    def _sleep_until_due(self) -> None:
        try:
            decision = self.issuer.decision()
        except RETRYABLE as error:
            self._log.warning("sleep", f"cannot read the store ({error}); looking again later")
            self._stop.wait(self._backoff.maximum)
            return
        interval = self.issuer.settings.check_interval
        if decision.due or decision.at is None:
            seconds = MIN_SLEEP
        else:
            now = self.issuer.clock()
            seconds = min(max((decision.at - now).total_seconds(), MIN_SLEEP), interval)
        self._log.step(
            "sleep", f"next look in {seconds:.0f} s ({decision.reason})", seconds=seconds
        )
        self._stop.wait(seconds)

    def _with_retries(self, *, force: bool, attempts: int | None) -> Outcome:
        attempt = 0
        while True:
            try:
                return self.issuer.issue(force=force)
            except PERMANENT:
                raise
            except RETRYABLE as error:
                attempt += 1
                if attempts is not None and attempt >= attempts:
                    raise IssuanceFailedError(
                        f"issuance of {self.issuer.plan.name!r} failed {attempt} times; last: "
                        f"{type(error).__name__}: {error}. The previous bundle stays in force."
                    ) from error
                delay = self._backoff.delay(attempt - 1)
                self._log.warning(
                    "retry",
                    f"{type(error).__name__}: {error}; the previous bundle stays in force; "
                    f"retrying in {delay:.1f} s",
                    attempt=attempt,
                    error=type(error).__name__,
                )
                if self._stop.wait(delay):
                    raise IssuanceFailedError("stopped while waiting to retry") from error
