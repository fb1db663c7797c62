"""One line per stage, a spinner while a stage waits, and a clear block when one fails."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.status import Status

from nitrotls.demo.errors import DemoInterruptedError, DemoStageError
from nitrotls.demo.ready import NotReadyError


@dataclass
class Stage:
    """What a running stage may say: :meth:`waiting` (spinner text), ``detail`` (final line)."""

    title: str
    status: Status | None
    detail: str = ""
    notes: list[str] = field(default_factory=list)

    def waiting(self, text: str) -> None:
        """Update the spinner: what the stage is waiting for right now."""
        if self.status is not None:
            self.status.update(f"[bold]{escape(self.title)}[/]: {escape(text)}")

    def note(self, text: str) -> None:
        """An extra line printed under the stage's line."""
        self.notes.append(text)


@dataclass
class Progress:
    """Prints stage lines on ``console``; timings are kept in :attr:`timings`."""

    console: Console
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, title: str) -> Iterator[Stage]:
        """Run a stage; any failure inside becomes a :class:`DemoStageError` naming it."""
        start = time.monotonic()
        spinner = self.console.is_terminal and not self.console.is_dumb_terminal
        status = self.console.status(f"[bold]{escape(title)}[/]…") if spinner else None
        stage = Stage(title, status)
        try:
            with status if status is not None else contextlib.nullcontext():
                yield stage
        except DemoStageError as error:
            self._failed(title, error)
            raise
        except NotReadyError as error:
            tail = error.child.tail() if error.child else ""
            last = tail.strip().splitlines()[-1] if tail.strip() else ""
            ended = error.child is not None and not error.child.alive()
            reason = f"{error}: {last}" if last and ended else str(error)
            failure = DemoStageError(title, reason, tail)
            self._failed(title, failure)
            raise failure from None
        except DemoInterruptedError:
            raise
        except Exception as error:  # any other failure inside a stage: name the stage
            failure = DemoStageError(title, f"{type(error).__name__}: {error}")
            self._failed(title, failure)
            raise failure from error
        elapsed = time.monotonic() - start
        self.timings[title] = elapsed
        self.console.print(
            f"[green]✓[/] {escape(title):<21} [dim]{elapsed:5.2f}s[/]  {escape(stage.detail)}",
            highlight=False,
            soft_wrap=True,
        )
        for note in stage.notes:
            self.console.print(f"{'':31}[dim]{escape(note)}[/]", highlight=False, soft_wrap=True)

    def _failed(self, title: str, error: DemoStageError) -> None:
        self.console.print(
            f"[bold red]✗[/] {escape(title):<21} [bold red]failed[/]  {escape(error.reason)}",
            highlight=False,
            soft_wrap=True,
        )
        if error.tail:
            self.console.print(
                Panel(escape(error.tail), title="last lines of its log", border_style="red"),
                highlight=False,
            )
