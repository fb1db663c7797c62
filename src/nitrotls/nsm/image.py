"""Measuring a simulated enclave image into PCR0, PCR1, PCR2 (and a signing cert into PCR8).

nitro-cli measures an EIF in sections: PCR1 covers the kernel, cmdline and the first ("boot")
ramdisk; PCR2 the remaining (application) ramdisks; PCR0 all of them in order. Each is
``SHA-384(zeros || SHA-384(section bytes...))``. A simulated image has the same shape: a fixed
boot section (nitrotls's stand-in for AWS's kernel and init blobs, so PCR1 is one constant, as
it is for every EIF built with one nitro-cli release) and an application section made from the
image the caller names:

* a **file**: its bytes, as a ramdisk is;
* a **directory**: a header, then every entry below it in the order of its relative path
  (POSIX separators, compared as bytes), each as a record: kind (``d``/``f``/``l``), path,
  permission bits (``st_mode & 0o7777``), then the content (files) or link target (symlinks).
  Symlinks are measured as links and never followed (as a cpio ramdisk stores them); other
  kinds (sockets, devices, FIFOs) are refused. Timestamps and owners are not measured. Like
  a Docker ``COPY``, permission bits depend on how the tree was checked out (umask).

PCR8 is nitro-cli's: ``SHA-384(zeros || SHA-384(DER of the signing certificate))``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from nitrotls.nsm.errors import ImageError
from nitrotls.nsm.pcr import measurement

BOOT_SECTION = (
    b"nitrotls simulated enclave image v1: boot section "
    b"(stands in for the kernel, cmdline and init ramdisk of an EIF)\n"
)
TREE_HEADER = b"nitrotls simulated image tree v1\n"
_CHUNK = 1 << 20


def measure_image(path: Path | str) -> dict[int, bytes]:
    """PCR0, PCR1 and PCR2 of the simulated image at ``path`` (a file or a directory)."""
    root = Path(path)
    whole = hashlib.sha384(BOOT_SECTION)
    boot = hashlib.sha384(BOOT_SECTION)
    app = hashlib.sha384()
    for chunk in _application_section(root):
        whole.update(chunk)
        app.update(chunk)
    return {
        0: measurement(whole.digest()),
        1: measurement(boot.digest()),
        2: measurement(app.digest()),
    }


def measure_signing_cert(path: Path | str) -> bytes:
    """PCR8 for an EIF signed with the certificate at ``path`` (PEM or DER)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ImageError(f"cannot read signing certificate {path}: {error.strerror}") from None
    return signing_cert_pcr(raw, source=str(path))


def signing_cert_pcr(raw: bytes, *, source: str = "signing certificate") -> bytes:
    """PCR8 of a PEM or DER certificate given as bytes."""
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(raw)
        else:
            cert = x509.load_der_x509_certificate(raw)
    except ValueError:
        raise ImageError(f"{source} is not an X.509 certificate (expected PEM or DER)") from None
    return measurement(hashlib.sha384(cert.public_bytes(Encoding.DER)).digest())


def _application_section(root: Path) -> Iterator[bytes]:
    try:
        info = root.stat()
    except OSError as error:
        raise ImageError(
            f"cannot measure image {root}: {error.strerror or error} "
            "(expected a file or a directory)"
        ) from None
    if stat.S_ISREG(info.st_mode):
        yield from _file_chunks(root, info.st_size)
    elif stat.S_ISDIR(info.st_mode):
        yield TREE_HEADER
        for relative in _tree_entries(root):
            yield from _entry_record(root, relative)
    else:
        raise ImageError(f"image {root} is neither a regular file nor a directory")


def _tree_entries(root: Path) -> list[str]:
    """Every path below ``root`` (relative, POSIX), sorted as bytes; symlinks not followed."""
    found: list[str] = []
    pending = [""]
    while pending:
        prefix = pending.pop()
        directory = root / prefix if prefix else root
        try:
            entries = list(os.scandir(directory))
        except OSError as error:
            raise ImageError(f"cannot list {directory}: {error.strerror or error}") from None
        for entry in entries:
            relative = f"{prefix}/{entry.name}" if prefix else entry.name
            found.append(relative)
            if entry.is_dir(follow_symlinks=False):
                pending.append(relative)
    return sorted(found, key=os.fsencode)


def _entry_record(root: Path, relative: str) -> Iterator[bytes]:
    full = root / relative
    try:
        info = full.lstat()
    except OSError as error:
        raise ImageError(f"cannot read image entry {relative}: {error.strerror}") from None
    name = os.fsencode(relative)
    mode = stat.S_IMODE(info.st_mode).to_bytes(4, "big")
    head = len(name).to_bytes(4, "big") + name + mode
    if stat.S_ISDIR(info.st_mode):
        yield b"d" + head
    elif stat.S_ISLNK(info.st_mode):
        target = os.fsencode(full.readlink())
        yield b"l" + head + len(target).to_bytes(4, "big") + target
    elif stat.S_ISREG(info.st_mode):
        yield b"f" + head + info.st_size.to_bytes(8, "big")
        yield from _file_chunks(full, info.st_size)
    else:
        raise ImageError(
            f"image entry {relative} is not a file, directory or symlink; "
            "sockets, devices and FIFOs cannot be measured"
        )


def _file_chunks(path: Path, size: int) -> Iterator[bytes]:
    read = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                read += len(chunk)
                yield chunk
    except OSError as error:
        raise ImageError(f"cannot read image file {path}: {error.strerror}") from None
    if read != size:
        raise ImageError(
            f"image file {path} changed while it was measured "
            f"(expected {size} bytes, read {read}); measure it again when it is stable"
        )
