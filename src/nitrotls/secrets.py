"""Zeroable buffers for private keys and data keys.

Python's ``bytes`` are immutable and may be copied anywhere; nitrotls keeps every plaintext key in
a ``bytearray`` and wipes it as soon as it is used. :class:`SecretBuffer` makes that the default:
use it as a context manager and the memory is zeroed on exit, whatever happens.
"""

from __future__ import annotations

from types import TracebackType


def wipe(buffer: bytearray | memoryview) -> None:
    """Overwrite ``buffer`` with zeros in place: the memory itself is written through a
    memoryview (no copy of the secret is made, none is left behind)."""
    view = memoryview(buffer).cast("B")
    if view.readonly:
        raise TypeError("cannot wipe a read-only buffer")
    if len(view):
        view[:] = bytes(len(view))


class SecretBuffer:
    """A bytearray holding a secret, zeroed on :meth:`wipe` or when the ``with`` block ends."""

    __slots__ = ("_data",)

    def __init__(self, data: bytearray) -> None:
        self._data = data

    @classmethod
    def take(cls, source: bytes | bytearray) -> SecretBuffer:
        """Copy ``source`` into a new buffer, wiping ``source`` when it is a bytearray."""
        buffer = cls(bytearray(source))
        if isinstance(source, bytearray):
            wipe(source)
        return buffer

    @property
    def data(self) -> bytearray:
        """The live bytes; do not keep references past the buffer's life."""
        return self._data

    def __len__(self) -> int:
        return len(self._data)

    def wipe(self) -> None:
        wipe(self._data)

    def __enter__(self) -> SecretBuffer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wipe()

    def __repr__(self) -> str:
        return f"SecretBuffer(<{len(self._data)} bytes hidden>)"
