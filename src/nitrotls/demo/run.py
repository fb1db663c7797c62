"""Running the demo: one at a time per data directory, signals as clean stops, nothing left over.

SIGINT, SIGTERM and SIGHUP become :class:`DemoInterruptedError` (once; further signals are ignored
while stopping). Starting a child and recording it happen with interruption deferred, so no
child can be started without being stopped again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from types import FrameType

from rich.console import Console

from nitrotls.demo.errors import DemoError, DemoInterruptedError
from nitrotls.demo.layout import DemoLayout
from nitrotls.demo.orchestrator import Demo, DemoOptions, child_environment
from nitrotls.demo.procs import Supervisor, stop_leftovers
from nitrotls.demo.progress import Progress
from nitrotls.demo.summary import print_summary

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class InterruptGuard:
    """Turn the first stop signal into :class:`DemoInterruptedError` (unless deferred/stopping)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._deferred = 0
        self._pending = False
        self._stopping = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> InterruptGuard:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None or self._stopping:
            return
        self.received = signal.Signals(signum).name
        if self._deferred:
            self._pending = True
            return
        raise DemoInterruptedError(f"received {self.received}")

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold an interruption back until the block ends (start a child and record it)."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        if not self._deferred and self._pending:
            self._pending = False
            raise DemoInterruptedError(f"received {self.received}")

    def stopping(self) -> None:
        """From now on signals are ignored: the demo is already stopping everything."""
        self._stopping = True


@contextlib.contextmanager
def demo_lock(layout: DemoLayout) -> Iterator[None]:
    """One demo per data directory: an exclusive ``flock`` on ``demo/lock``."""
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DemoError(
                f"another `nitrotls demo` (pid {holder}) is running with the data directory "
                f"{layout.root.parent}; stop it first, or use another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def run_demo(options: DemoOptions, console: Console) -> int:
    """Run the demo; returns the exit status (errors are raised as typed DemoErrors)."""
    layout = DemoLayout.under_home().create()
    with InterruptGuard() as guard, demo_lock(layout):
        leftovers = stop_leftovers(layout)
        if leftovers:
            console.print(
                f"stopped {leftovers} process(es) left behind by an earlier demo run",
                highlight=False,
            )
        supervisor = Supervisor(layout, child_environment(), guard=guard.deferred)
        try:
            demo = Demo(options, layout, supervisor, Progress(console))
            result = demo.start()
            print_summary(console, result)
            if options.exit_after_verify:
                return 0
            console.print("[bold]serving[/]: press Ctrl-C to stop everything", highlight=False)
            try:
                demo.watch_serving()
            except DemoInterruptedError:
                console.print(f"{guard.received}: stopping", highlight=False)
                return 0
            return 0  # pragma: no cover - watch_serving only returns by raising
        finally:
            guard.stopping()
            count = len(supervisor.children)
            with console.status(f"stopping the {count} process(es) the demo started…"):
                killed = supervisor.stop_all()
            forced = f" ({', '.join(killed)} had to be killed)" if killed else ""
            console.print(
                f"stopped the {count} process(es) the demo started{forced}", highlight=False
            )
