"""Turn the PCR options every verifying command shares into an attestation :class:`Policy`.

Each ``--pcrs-file`` is one accepted measurement set (several allow rolling upgrades); ``--pcr``
pins apply to every set (or form the only set when no file is given).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from nitrotls.attestation import Policy

F = TypeVar("F", bound=Callable[..., Any])


def parse_pcr_pin(text: str) -> tuple[int, bytes]:
    """``IDX:HEX`` → (index, value)."""
    index_text, sep, value_text = text.partition(":")
    try:
        if not sep:
            raise ValueError
        index, value = int(index_text), bytes.fromhex(value_text)
    except ValueError:
        raise click.BadParameter(f"expected IDX:HEX, got {text!r}") from None
    if not 0 <= index <= 31 or len(value) not in (32, 48, 64):
        raise click.BadParameter(f"PCR {index}: index must be 0-31 and value 32, 48 or 64 bytes")
    return index, value


def accepted_sets(pins: Sequence[str], files: Sequence[Path]) -> tuple[dict[int, bytes], ...]:
    from nitrotls.attestation import load_pcrs_file

    common = dict(parse_pcr_pin(pin) for pin in pins)
    sets = [load_pcrs_file(path) | common for path in files]
    if not sets and common:
        sets = [common]
    return tuple(sets)


def pcr_options(func: F) -> F:
    """``--pcr IDX:HEX`` (repeatable) and ``--pcrs-file F`` (repeatable)."""
    func = click.option(
        "--pcrs-file",
        "pcrs_files",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help='Accepted measurements (nitro-cli describe-eif JSON or {"PCR0": hex}); repeatable.',
    )(func)
    func = click.option(
        "--pcr", "pcr_pins", multiple=True, metavar="IDX:HEX", help="Pin one PCR; repeatable."
    )(func)
    return func


def build_policy(
    pins: Sequence[str],
    files: Sequence[Path],
    *,
    allow_debug: bool = False,
    max_age: float | None = None,
    allow_any_measurement: bool = False,
) -> Policy:
    from nitrotls.attestation import Policy

    return Policy(
        accepted_pcrs=accepted_sets(pins, files),
        allow_debug=allow_debug,
        max_age=timedelta(seconds=max_age) if max_age is not None else None,
        allow_any_measurement=allow_any_measurement,
    )
