"""The demo's children: started in their own process groups, logged, tracked, and always stopped.

Every child gets its own session (so a terminal's Ctrl-C reaches only the demo, which then stops
the children in order), a log file under ``demo/logs``, and an environment marker naming the
demo directory. Their PIDs are written to ``demo/children.json`` as they start, so a later run
(or a test) can find anything an earlier, killed run left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from nitrotls.demo.layout import DemoLayout
from nitrotls.nsm import write_atomic

MARKER_ENV = "NITROTLS_DEMO_CHILD"
"""Set in every child's environment to the demo directory: how leftovers are recognized."""

STOP_GRACE = 6.0
TAIL_LINES = 15


@dataclass
class Child:
    """One started process and where its output goes."""

    name: str
    argv: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log: Path
    stdout: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the child's log (stderr, and stdout unless kept apart)."""
        return read_tail(self.log, lines)

    def exit_reason(self) -> str:
        code = self.process.returncode
        if code is None:
            return f"{self.name} is still running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"{self.name} was killed by {signal.Signals(-code).name}"
        return f"{self.name} exited with status {code}"


def read_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """Last ``lines`` lines of a text file (empty when missing)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


@dataclass
class Supervisor:
    """Starts children and guarantees they are stopped (context manager, or :meth:`stop_all`)."""

    layout: DemoLayout
    base_env: Mapping[str, str]
    guard: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    children: list[Child] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        keep_stdout: bool = False,
    ) -> Child:
        """Start ``argv`` as ``name`` in a new session; output goes to ``logs/<name>.log``."""
        log = self.layout.logs / f"{name}.log"
        out = self.layout.logs / f"{name}.out" if keep_stdout else None
        environment = {**self.base_env, **(env or {}), MARKER_ENV: str(self.layout.root)}
        with self.guard(), contextlib.ExitStack() as files:
            err_file = files.enter_context(log.open("wb"))
            out_file = files.enter_context(out.open("wb")) if out is not None else err_file
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=err_file,
                env=environment,
                cwd=self.layout.root,
                start_new_session=True,
                close_fds=True,
            )
            child = Child(name, tuple(argv), process, log, out)
            self.children.append(child)
            self._record()
        return child

    def wait_exit(self, child: Child, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for ``child`` to end; its status, or None."""
        try:
            return child.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop_all(self, grace: float = STOP_GRACE) -> list[str]:
        """Stop every child (newest first); returns the names of those that had to be killed."""
        return self.stop(list(reversed(self.children)), grace)

    def stop(self, children: Sequence[Child], grace: float = STOP_GRACE) -> list[str]:
        """SIGTERM each child's process group, wait up to ``grace`` s, then SIGKILL the rest."""
        for child in children:
            if child.alive():
                _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        killed: list[str] = []
        for child in children:
            remaining = max(0.0, deadline - time.monotonic())
            if self.wait_exit(child, remaining) is None:
                killed.append(child.name)
                _signal_group(child.pid, signal.SIGKILL)  # the whole group, before reaping
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout=5)
        return killed

    def _record(self) -> None:
        entries = [{"name": c.name, "pid": c.pid, "argv": list(c.argv)} for c in self.children]
        write_atomic(self.layout.children, json.dumps(entries, indent=2).encode(), mode=0o600)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def marked_processes(root: Path) -> list[int]:
    """Live processes whose environment carries this demo directory's marker (Linux /proc)."""
    marker = f"{MARKER_ENV}={root}".encode()
    found: list[int] = []
    for entry in _proc_entries():
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and entry != os.getpid():
            found.append(entry)
    return found


def _proc_entries() -> Iterable[int]:
    try:
        names = [entry.name for entry in Path("/proc").iterdir()]
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


def stop_leftovers(layout: DemoLayout, grace: float = STOP_GRACE) -> int:
    """Stop processes an earlier, killed run left behind (recognized by the marker only)."""
    pids = marked_processes(layout.root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_exists(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone (its parent reaps it).
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] != "Z"
