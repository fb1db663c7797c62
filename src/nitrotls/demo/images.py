"""The two simulated enclave images the demo measures: a generator and a main enclave.

Each is a small directory whose bytes and permission bits are fixed here, so its PCRs are the
same on every run and every machine (the measurement covers contents and modes, not times).
Different contents give different PCR0/PCR2, which is the point: the key policy lets the
generator's measurements make data keys and only the main enclave's measurements open them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nitrotls.nsm import measure_image, write_atomic

ROLES = ("generator", "main")

_FILES: dict[str, dict[str, str]] = {
    "generator": {
        "README": "nitrotls demo image: the certificate generator enclave.\n"
        "It makes the TLS key, seals it under a KMS data key at once, gets a certificate\n"
        "and publishes the sealed bundle, bound to its own attestation.\n",
        "cmd": "nitrotls generator run --once\n",
    },
    "main": {
        "README": "nitrotls demo image: the main enclave.\n"
        "It opens the bundle with a data key KMS releases only to this measurement,\n"
        "serves TLS from memory and proves it on every connection.\n",
        "cmd": "nitrotls serve --upstream http://127.0.0.1:PORT\n",
    },
}
IMAGE_VERSION = "nitrotls demo image v1\n"


def write_image(directory: Path, role: str) -> dict[int, bytes]:
    """(Re)write ``role``'s image into ``directory`` exactly; return its PCR0..2."""
    if role not in _FILES:
        raise ValueError(f"unknown demo image role {role!r}; expected one of {ROLES}")
    wanted = {"VERSION": IMAGE_VERSION, **_FILES[role]}
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.name not in wanted:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for name, text in wanted.items():
        path = directory / name
        data = text.encode()
        if not path.is_file() or path.is_symlink() or path.read_bytes() != data:
            path.unlink(missing_ok=True)
            write_atomic(path, data, mode=0o644)
        path.chmod(0o644)
    directory.chmod(0o755)  # an image is public; its modes are measured
    return measure_image(directory)


def write_pcrs_file(path: Path, pcrs: dict[int, bytes]) -> None:
    """A ``{"PCR0": hex, …}`` file, as ``--pcrs-file`` / ``--generator-pcrs`` accept."""
    data = {f"PCR{index}": value.hex() for index, value in sorted(pcrs.items())}
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o644)
