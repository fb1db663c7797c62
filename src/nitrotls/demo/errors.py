"""The demo's errors: which stage failed and why, with the tail of the child's log."""

from __future__ import annotations

from nitrotls.errors import NitroTLSError


class DemoError(NitroTLSError):
    """The demo could not run (its data directory, a lock, a missing tool)."""


class DemoStageError(DemoError):
    """A stage failed: ``stage`` names it, ``reason`` says why, ``tail`` is the child's log end."""

    def __init__(self, stage: str, reason: str, tail: str = "") -> None:
        super().__init__(f"stage {stage!r} failed: {reason}")
        self.stage = stage
        self.reason = reason
        self.tail = tail


class DemoInterruptedError(DemoError):
    """SIGINT, SIGTERM or SIGHUP arrived; everything the demo started is being stopped."""

    exit_code = 130
