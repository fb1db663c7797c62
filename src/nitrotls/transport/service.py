"""Running proxies as long-lived services: signals, graceful stop, file-descriptor budget, logs.

A service runs until SIGTERM or SIGINT, then stops accepting, lets open connections drain for
a bounded time and aborts what is left, so ``systemctl stop`` and Ctrl-C both end it promptly
and without tracebacks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence

from nitrotls.transport.proxy import ProxyServer

log = logging.getLogger("nitrotls.transport")


async def run_until_signal(
    servers: Sequence[ProxyServer],
    *,
    drain: float = 5.0,
    announce: Callable[[ProxyServer], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Start ``servers``, call ``announce`` for each, wait for a signal (or ``stop``), stop all."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    started: list[ProxyServer] = []
    try:
        for server in servers:
            await server.start()
            started.append(server)
            if announce is not None:
                announce(server)
        await stop.wait()
        open_now = sum(server.active for server in started)
        log.info("stopping: draining %d open connection(s) for up to %gs", open_now, drain)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await asyncio.gather(*(server.stop(drain) for server in started))


def ensure_fd_budget(connections: int) -> None:
    """Raise the soft open-file limit so ``connections`` relays (two sockets each) fit."""
    needed = 2 * connections + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "open-file limit %d is too low for %d connections (need %d); lower "
            "--max-connections or raise the hard limit",
            target,
            connections,
            needed,
        )


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return json.dumps(entry, sort_keys=True)


def configure_logging(*, json_lines: bool = False, verbose: bool = False) -> None:
    """Log to stderr, one line per event (JSON lines when asked)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
    root = logging.getLogger("nitrotls")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
