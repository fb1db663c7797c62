"""Shared printing for the CLI: rich for people, ``--json`` for programs, one line per error."""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

import click

from nitrotls.errors import NitroTLSError

if TYPE_CHECKING:
    from rich.console import Console

    console: Console
    err_console: Console


@cache
def _console(stderr: bool) -> Console:
    from rich.console import Console  # ~15 ms: only commands that print for people pay it

    return Console(stderr=stderr)


def __getattr__(name: str) -> Any:
    """``console`` and ``err_console``, made on first use."""
    if name == "console":
        return _console(False)
    if name == "err_console":
        return _console(True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def print_json(value: Any) -> None:
    """Write ``value`` as JSON on stdout (bytes as hex), one document per call."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fail(error: NitroTLSError) -> None:
    """Print a typed error as one actionable line on stderr."""
    from rich.markup import escape

    message = escape(str(error))
    _console(True).print(f"[bold red]error[/] ({type(error).__name__}): {message}", highlight=False)


def run_guarded(command: click.Command) -> int:
    """Run ``command``; a :class:`NitroTLSError` becomes one line and its exit code."""
    try:
        command.main(standalone_mode=False)
    except NitroTLSError as error:
        fail(error)
        return error.exit_code
    except click.exceptions.Exit as done:
        return int(done.exit_code or 0)
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Abort:
        _console(True).print("aborted")
        return 130
    except KeyboardInterrupt:
        return 130
    return 0
