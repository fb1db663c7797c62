"""Crash test: SIGKILL the generator process at each step of an issuance in turn.

After every kill the store holds the previous bundle or the complete new one (never half of
anything), and the next run succeeds once the dead holder's lease has expired.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

import pytest

from generator.conftest import ALIAS, Deployment
from nitrotls.bundle import verify
from nitrotls.generator import PAUSE_POINTS
from nitrotls.generator.steps import PAUSE_ENV, PAUSE_MARKER

NAME = "web.nitrotls.test"
LEASE_TTL = "1.5"


def run_args(deployment: Deployment) -> list[str]:
    return [
        "--enclave",
        f"simulated:{deployment.generator_image}",
        "generator",
        "run",
        "--once",
        "--force",
        "--domain",
        NAME,
        "--kms-endpoint",
        deployment.kms_endpoint,
        "--kms-key-id",
        ALIAS,
        "--store",
        f"dir:{deployment.store_dir}",
        "--lease-ttl",
        LEASE_TTL,
        "--log-json",
    ]


def kill_at(deployment: Deployment, point: str) -> str:
    """Start the generator paused at ``point``, SIGKILL it there; return its stderr so far."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from nitrotls.cli import main; main()", *run_args(deployment)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**deployment.env(), PAUSE_ENV: point},
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=60)
            if line is None:
                pytest.fail(f"the generator ended without pausing at {point}:\n{''.join(seen)}")
            seen.append(line)
            if line.strip() == f"{PAUSE_MARKER} {point}":
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
                assert process.returncode == -signal.SIGKILL
                return "".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)


@pytest.mark.slow
def test_sigkill_at_every_step_keeps_the_store_whole(deployment: Deployment) -> None:
    store = deployment.store()
    first = deployment.cli(*run_args(deployment))
    assert first.returncode == 0, first.stderr
    for point in PAUSE_POINTS:
        before = store.latest(NAME)
        assert before is not None
        kill_at(deployment, point)
        after = store.latest(NAME)
        assert after is not None
        previous_seq = verify(before.data, deployment.verifier, deployment.generator_policy).seq
        verified = verify(after.data, deployment.verifier, deployment.generator_policy)
        if point == "after-publish":
            assert after.id != before.id and verified.seq == previous_seq + 1
        else:
            assert after == before, f"killed at {point}, the latest bundle changed"
        # Nothing but complete bundles is listed (an unpublished one may be an orphan only
        # on S3; the directory store never shows one).
        for bundle_id in store.list(NAME):
            verify(store.get(NAME, bundle_id), deployment.verifier, deployment.generator_policy)
        # The next run waits out the dead holder's lease and succeeds.
        following = deployment.cli(*run_args(deployment))
        assert following.returncode == 0, f"after a kill at {point}: {following.stderr}"
        newest = store.latest(NAME)
        assert newest is not None
        assert (
            verify(newest.data, deployment.verifier, deployment.generator_policy).seq
            == verified.seq + 1
        )
