"""Crash-safe file primitives: atomic publication, bounded reads, and lock files with a deadline.

A reader must never see half a file, so every write goes to a temporary file in the same
directory, is fsynced, then renamed (or hard-linked, when the name must not already exist) over
the final name, and the directory is fsynced so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"
LOCK_TIMEOUT = 10.0


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, data: bytes, mode: int) -> Path:
    temp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return temp


def publish(temp: Path, final: Path, *, exclusive: bool) -> None:
    """Make ``temp`` visible as ``final`` in one step (tests patch this to simulate a crash)."""
    if exclusive:
        os.link(temp, final)  # fails with FileExistsError instead of replacing
        temp.unlink()
    else:
        temp.replace(final)


def atomic_write(final: Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False) -> None:
    """Write ``data`` to ``final`` so readers see the old content or all of the new.

    With ``exclusive`` the write fails with :class:`FileExistsError` when ``final`` exists.
    """
    temp = _write_temp(final.parent, data, mode)
    try:
        publish(temp, final, exclusive=exclusive)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(final.parent)


def read_bounded(path: Path, limit: int) -> bytes | None:
    """The file's bytes, ``None`` when absent; ``ValueError`` when above ``limit``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} holds more than {limit} bytes")
    return data


@contextlib.contextmanager
def locked(lock_path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path``; ``TimeoutError`` after ``timeout`` seconds.

    Non-blocking attempts with a short sleep, so a stuck peer cannot hang us forever.
    """
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"lock {lock_path} still held after {timeout:.0f} s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)  # closing drops the lock
