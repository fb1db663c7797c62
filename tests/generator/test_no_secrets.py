"""No secret on disk or in logs.

An issuance (ACME account creation and reuse, HTTP-01 through the responder, local KMS in this
process) runs under an audit hook that records every file opened for writing (and every rename or
link target). Afterwards none of those files, nothing under the test's directories, and no log
line or console output contains the TLS private key, the ACME account key, or any data key, in
any encoding: raw, DER, PEM, base64 (all alignments, standard and URL-safe), hex. The plaintext is
known to the test only through the generator's secret-observer seam, called before each wipe.
"""

from __future__ import annotations

import base64
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from generator.conftest import Challenges, Deployment, acme_section
from nitrotls.generator import Runner, StepLog, make_issuer
from nitrotls.generator.steps import JsonFormatter, TextFormatter

from pebble_fixtures import PebbleStack

pytestmark = pytest.mark.slow
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class WriteRecorder:
    """Paths opened for writing while ``active`` (the audit hook cannot be removed, so it idles)."""

    def __init__(self) -> None:
        self.active = False
        self.paths: set[Path] = set()

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            if writing and isinstance(path, str | bytes | os.PathLike):
                self.paths.add(Path(os.fsdecode(path)).resolve())
        elif event in ("os.rename", "os.replace", "os.link"):
            self.paths.add(Path(os.fsdecode(args[1])).resolve())


RECORDER = WriteRecorder()
sys.addaudithook(RECORDER)


@pytest.fixture
def recorder() -> Iterator[WriteRecorder]:
    RECORDER.paths = set()
    RECORDER.active = True
    try:
        yield RECORDER
    finally:
        RECORDER.active = False


def encodings(secret: bytes) -> set[bytes]:
    """Every form a secret could take in a file or a log line."""
    forms = {secret, secret.hex().encode(), secret.hex().upper().encode()}
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * shift + secret)
            # The characters that depend on the secret alone, whatever precedes it.
            forms.add(text[4 : len(text) - 4].rstrip(b"="))
    return {form for form in forms if len(form) >= 16}


def key_forms(pkcs8: bytes) -> set[bytes]:
    """The PKCS#8 DER, its PEM lines, and the raw private number."""
    key = serialization.load_der_private_key(pkcs8, None)
    forms = encodings(pkcs8)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forms.update(line for line in pem.splitlines()[1:-1] if len(line) >= 16)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        value = key.private_numbers().private_value
        forms |= encodings(value.to_bytes((key.curve.key_size + 7) // 8, "big"))
    elif isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        for part in (numbers.d, numbers.p, numbers.q):
            forms |= encodings(part.to_bytes((part.bit_length() + 7) // 8, "big"))
    return forms


class Capture(logging.Handler):
    """Every log record, formatted three ways (plain, the generator's text and JSON lines)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self._text, self._json = TextFormatter(), JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + repr(record.args))
        self.lines.append(self._text.format(record))
        self.lines.append(self._json.format(record))


def test_no_secret_reaches_a_file_or_a_log(
    deployment: Deployment,
    pebble: PebbleStack,
    challenges: Challenges,
    recorder: WriteRecorder,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secrets: list[tuple[str, bytes]] = []
    capture = Capture()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        store = deployment.store()
        challenges.target = store
        config = deployment.config(ca=acme_section(pebble))

        def observe(what: str, secret: bytes) -> None:
            secrets.append((what, secret))

        for force in (False, True):  # the second run unseals the stored ACME account
            issuer = make_issuer(
                config, deployment.generator, store=store, log=StepLog(), secret_observer=observe
            )
            assert Runner(issuer).once(force=force).issued
            issuer.close()
    finally:
        root.removeHandler(capture)
        root.setLevel(previous_level)
    kinds = [what for what, _ in secrets]
    assert kinds.count("tls-key") == 2
    assert kinds.count("acme-account-key") == 2
    assert kinds.count("data-key") >= 4  # one per seal, one per account seal or unseal

    forbidden: dict[bytes, str] = {}
    for what, secret in secrets:
        forms = key_forms(secret) if what != "data-key" else encodings(secret)
        forbidden.update({form: what for form in forms})

    # The recorder saw the store's writes (so it can catch a leak); check each file.
    assert any(path.is_relative_to(deployment.store_dir.resolve()) for path in recorder.paths)
    files = {p for p in recorder.paths if p.is_file()}
    for directory in (deployment.home, deployment.workdir):
        files.update(p.resolve() for p in directory.rglob("*") if p.is_file())
    assert files
    for path in sorted(files):
        content = path.read_bytes()
        for form, what in forbidden.items():
            assert form not in content, f"{what} found in {path}"

    out, err = capfd.readouterr()
    text = "\n".join([*capture.lines, out, err])
    assert "bundle seq 2 bound" in text  # the capture saw the generator's own log
    for form, what in forbidden.items():
        assert form.decode("latin-1") not in text, f"{what} found in a log line"
