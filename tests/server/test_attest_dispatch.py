"""Where the attestation responder calls its source: on the event loop only when the source
promises not to block; a device ioctl, a renewal or a source that says nothing goes to a thread."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest

from nitrotls.server.attest import AttestationResponder
from nitrotls.server.identity import ServedIdentity
from nitrotls.server.metrics import Metrics

NONCE_QUERY = b"/.well-known/nitrotls/attestation?nonce=" + b"A" * 43  # 32 bytes, base64url


class RecordingSource:
    """An AttestationSource that notes the thread it was called on."""

    def __init__(self, blocks: bool | None) -> None:
        if blocks is not None:
            self.blocks = blocks
        self.threads: list[int] = []

    def attest(
        self,
        *,
        public_key: bytes | None = None,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
    ) -> bytes:
        self.threads.append(threading.get_ident())
        return b"document"


def identity() -> ServedIdentity:
    return ServedIdentity(
        leaf=b"leaf",
        spki_sha384=bytes(48),
        bundle_id=bytes(16),
        seq=1,
        name="app.example",
        not_after=datetime.now(UTC) + timedelta(days=1),
    )


async def respond(source: RecordingSource) -> tuple[int, int]:
    responder = AttestationResponder(source, Metrics())  # type: ignore[arg-type]
    answer = await responder.respond(b"GET", NONCE_QUERY, None, identity(), "127.0.0.1")
    assert answer.status == 200, answer
    return threading.get_ident(), source.threads[0]


@pytest.mark.parametrize(
    ("blocks", "on_loop"),
    [(False, True), (True, False), (None, False)],
    ids=["says-it-does-not-block", "says-it-blocks", "says-nothing"],
)
def test_source_runs_on_the_loop_only_when_it_cannot_block(
    blocks: bool | None, on_loop: bool
) -> None:
    loop_thread, source_thread = asyncio.run(respond(RecordingSource(blocks)))
    assert (source_thread == loop_thread) is on_loop
