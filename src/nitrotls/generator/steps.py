"""One clear log line per step (text for people, JSON with ``--log-json``), and the test pause.

``NITROTLS_TEST_PAUSE_AT=<point>`` is a test-only hook: when set, the generator prints
``NITROTLS-TEST-PAUSED <point>`` on stderr at that point and waits (``NITROTLS_TEST_PAUSE_SECONDS``,
default 60), so the crash test can SIGKILL it there. Production deployments never set it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

LOGGER_NAME = "nitrotls.generator"
PAUSE_ENV = "NITROTLS_TEST_PAUSE_AT"
PAUSE_SECONDS_ENV = "NITROTLS_TEST_PAUSE_SECONDS"
PAUSE_MARKER = "NITROTLS-TEST-PAUSED"
PAUSE_POINTS = (
    "after-key",
    "after-seal",
    "after-csr",
    "after-cert",
    "after-bind",
    "before-publish",
    "after-publish",
)


def pause_point(point: str) -> None:
    """Test-only: stop here when ``$NITROTLS_TEST_PAUSE_AT`` names this point."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    sys.stderr.write(f"{PAUSE_MARKER} {point}\n")
    sys.stderr.flush()
    time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV, "60")))


class StepLog:
    """Logs a generator step: a short step name, one sentence, and structured fields."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger(LOGGER_NAME)

    def step(self, step: str, message: str, **fields: Any) -> None:
        self._logger.info(message, extra={"step": step, "fields": fields})

    def warning(self, step: str, message: str, **fields: Any) -> None:
        self._logger.warning(message, extra={"step": step, "fields": fields})


class TextFormatter(logging.Formatter):
    """``2025-01-01T12:00:00Z seal     sealed the key …``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        step = getattr(record, "step", record.levelname.lower())
        level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
        return f"{stamp} {step:<8} {level}{record.getMessage()}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, step, message, and the step's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "step": getattr(record, "step", None),
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        return json.dumps(entry, default=str, sort_keys=False)


_installed: logging.Handler | None = None


def configure_logging(*, json_lines: bool, stream: TextIO | None = None) -> logging.Handler:
    """Send nitrotls's log to ``stream`` (stderr by default), replacing an earlier setup."""
    global _installed
    root = logging.getLogger("nitrotls")
    if _installed is not None:
        root.removeHandler(_installed)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    _installed = handler
    return handler
