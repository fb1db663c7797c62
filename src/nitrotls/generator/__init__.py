"""nitrotls.generator: the generator enclave's program — issue, seal, bind, publish, renew.

Public API::

    issuer = make_issuer(config, source)             # from nitrotls.toml + overrides
    Runner(issuer).once(force=False)                 # issue if due, bounded retries
    Runner(issuer, stop=event).forever()             # daemon: renew at 2/3 of the lifetime

:class:`Issuer` (one issuance under the store lease), :class:`Plan`, :class:`Outcome`,
:class:`Runner`, :func:`identify`, :class:`AccountVault` (the sealed ACME account),
:func:`decide` / :class:`Decision` (renewal), :func:`configure_logging`, the errors of
:mod:`.errors`, and the test-only pause points (:data:`PAUSE_POINTS`). See docs/generator.md.
"""

from nitrotls.generator.account import AccountVault
from nitrotls.generator.errors import (
    AccountRecordError,
    GeneratorConfigError,
    GeneratorError,
    IssuanceFailedError,
    LeaseUnavailableError,
)
from nitrotls.generator.issuer import Issuer, Outcome, Plan
from nitrotls.generator.renewal import Decision, decide, read_previous
from nitrotls.generator.runner import Backoff, Runner, identify
from nitrotls.generator.steps import PAUSE_POINTS, StepLog, configure_logging
from nitrotls.generator.wiring import make_issuer, open_kms

__all__ = [
    "PAUSE_POINTS",
    "AccountRecordError",
    "AccountVault",
    "Backoff",
    "Decision",
    "GeneratorConfigError",
    "GeneratorError",
    "IssuanceFailedError",
    "Issuer",
    "LeaseUnavailableError",
    "Outcome",
    "Plan",
    "Runner",
    "StepLog",
    "configure_logging",
    "decide",
    "identify",
    "make_issuer",
    "open_kms",
    "read_previous",
]
