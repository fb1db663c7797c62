"""Bounded retries with exponential backoff and full jitter, for KMS calls.

botocore's own retries are switched off in the client so that this is the only retry loop:
explicit, bounded by ``max_attempts``, and testable (``sleep`` and ``random`` are injectable).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry throttling, 5xx and connection failures."""

    max_attempts: int = 5
    base_delay: float = 0.05
    max_delay: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**attempt))."""
        ceiling = min(self.max_delay, self.base_delay * float(1 << min(attempt, 32)))
        return self.random() * ceiling

    def wait(self, attempt: int) -> None:
        self.sleep(self.delay(attempt))


def is_retryable(code: str, status: int) -> bool:
    """Throttling codes and server-side (5xx) failures are worth another try."""
    return code in THROTTLING_CODES or status >= 500
