"""The SSLContext from memory and the TLS policy it carries."""

from __future__ import annotations

import base64
import gc
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nitrotls.server import tls
from nitrotls.server.errors import TLSContextError

from .conftest import PKI, Issued, served_from
from system_tools import require_tool


@contextmanager
def tls_server(ctx: ssl.SSLContext, handshakes: int = 1) -> Iterator[int]:
    """A blocking TLS server in a thread that completes ``handshakes`` handshakes."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        for _ in range(handshakes):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(b"hi")
                    tls_conn.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(5)


def connect(port: int, client: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return client.wrap_socket(sock, server_hostname="localhost")


def test_context_serves_chain_loaded_from_memory(pki: PKI) -> None:
    issued = pki.issue()
    served = served_from(issued)
    with tls_server(served.context) as port, connect(port, pki.client_context()) as conn:
        assert conn.recv(2) == b"hi"
        assert conn.getpeercert(binary_form=True) == issued.leaf
        assert conn.version() == "TLSv1.3"
        assert conn.selected_alpn_protocol() == "http/1.1"


@pytest.mark.parametrize("key_type", ["p384", "rsa2048"])
def test_other_key_types_load(pki: PKI, key_type: str) -> None:
    issued = pki.issue(key_type=key_type)
    served = served_from(issued)
    client = pki.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_server(served.context) as port, connect(port, client) as conn:
        assert conn.getpeercert(binary_form=True) == issued.leaf
        assert conn.version() == "TLSv1.2"
        assert conn.cipher()[0].startswith("ECDHE-")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_refused(pki: PKI, version: ssl.TLSVersion) -> None:
    issued = pki.issue()
    served = served_from(issued)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(str(pki.root_pem))
    client.set_ciphers("ALL:@SECLEVEL=0")
    client.minimum_version = version
    client.maximum_version = version
    # Control: the same client does reach a server that allows the old version.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.set_ciphers("ALL:@SECLEVEL=0")
    permissive.minimum_version = version
    permissive.load_cert_chain(*_pem_files(issued))
    try:
        with tls_server(permissive) as port, connect(port, client) as conn:
            assert conn.version() in ("TLSv1", "TLSv1.1")
    except (ssl.SSLError, OSError):
        pytest.skip(f"this OpenSSL build cannot speak {version.name} at all")
    with tls_server(served.context) as port, pytest.raises((ssl.SSLError, OSError)):
        connect(port, client).close()


def _pem_files(issued: Issued) -> tuple[str, str]:
    """Test-only files (a throwaway key) for the permissive control server."""
    import tempfile

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_der_private_key(bytes(issued.key), None)
    directory = Path(tempfile.mkdtemp())
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_text(ssl.DER_cert_to_PEM_cert(issued.leaf))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


def test_non_ecdhe_tls12_cipher_refused(pki: PKI) -> None:
    served = served_from(pki.issue(key_type="rsa2048"))
    client = pki.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256")
    with tls_server(served.context) as port, pytest.raises((ssl.SSLError, OSError)):
        connect(port, client).close()


def test_policy_options() -> None:
    ctx = tls.policy_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    for option in (ssl.OP_NO_COMPRESSION, ssl.OP_NO_RENEGOTIATION, ssl.OP_NO_TICKET):
        assert ctx.options & option
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.num_tickets == 0
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(tls.TLS12_CIPHERS.split(":"))


def test_no_session_resumption(pki: PKI) -> None:
    served = served_from(pki.issue())
    client = pki.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_server(served.context, handshakes=2) as port:
        with connect(port, client) as first:
            first.recv(2)
            session = first.session
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        with client.wrap_socket(sock, server_hostname="localhost", session=session) as second:
            second.recv(2)
            assert not second.session_reused
    assert served.context.session_stats()["hits"] == 0


def test_key_exchange_groups_restricted(pki: PKI) -> None:
    """X25519, P-256, P-384 only (sslyze checks the same against Mozilla's list)."""
    if tls._native() is None:
        pytest.skip("libssl not reachable from ctypes on this platform")
    served = served_from(pki.issue())
    for groups, ok in (("X448:P-521", False), ("P-384", True), ("X25519", True)):
        assert handshake_succeeds(served.context, groups) is ok, groups


def test_key_must_match_leaf(pki: PKI) -> None:
    one, other = pki.issue(), pki.issue()
    with pytest.raises(TLSContextError, match="refused"):
        tls.context_from_memory(one.chain, other.key)


def test_empty_chain_refused(pki: PKI) -> None:
    with pytest.raises(TLSContextError, match="empty"):
        tls.context_from_memory([], pki.issue().key)


def test_garbage_key_refused(pki: PKI) -> None:
    with pytest.raises(TLSContextError):
        tls.context_from_memory(pki.issue().chain, bytearray(b"\x30\x03\x02\x01\x00"))


def test_base64_into_bytearray_matches_stdlib() -> None:
    for size in range(0, 70):
        data = bytes((i * 37 + size) % 256 for i in range(size))
        assert tls._b64_bytearray(bytearray(data)) == bytearray(base64.b64encode(data))


_AUDIT_ACTIVE: list[list[tuple[str, object]]] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event != "open" or not _AUDIT_ACTIVE or len(args) < 3:
        return
    path, mode, flags = args[0], args[1], args[2]
    writes = isinstance(mode, str) and any(flag in mode for flag in "wax+")
    writes = writes or (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    if writes:
        _AUDIT_ACTIVE[-1].append((str(path), mode))


def test_no_file_written_while_loading(pki: PKI) -> None:
    """The key goes through a memfd only: nothing is opened for writing on a file system."""
    issued = pki.issue()
    if not getattr(_audit, "installed", False):
        sys.addaudithook(_audit)
        _audit.installed = True  # type: ignore[attr-defined]
    opened: list[tuple[str, object]] = []
    _AUDIT_ACTIVE.append(opened)
    try:
        tls.context_from_memory(issued.chain, bytearray(issued.key))
        with open(os.devnull, "w"):  # proves the hook sees writes at all
            pass
    finally:
        _AUDIT_ACTIVE.clear()
    assert opened == [(os.devnull, "w")]


def live_buffers() -> Iterator[bytes | bytearray | str]:
    """Every bytes-like or str object reachable from a GC-tracked container.

    bytes, bytearray and str are not tracked by the GC themselves, so they are found as the
    referents of the containers (module dicts, instances, lists, cells...) that hold them.
    The ``_asyncio`` module itself is passed over: before CPython 3.12.5 its referents include
    freed future iterators from its free list, and touching them aborts the interpreter
    later (gh-122695); its dict, which holds what it holds, is still scanned.
    """
    seen: set[int] = set()
    asyncio_module = sys.modules.get("_asyncio")
    for holder in gc.get_objects():
        if holder is asyncio_module:
            continue
        for ref in gc.get_referents(holder):
            if isinstance(ref, bytes | bytearray | str) and id(ref) not in seen:
                seen.add(id(ref))
                yield ref


def key_encodings(der: bytes) -> list[bytes]:
    b64 = base64.b64encode(der)
    return [
        der,
        b64[:48],
        base64.urlsafe_b64encode(der)[:48],
        der.hex().encode(),
        der.hex().upper().encode(),
    ]


def find_key(der: bytes, keep: list[object]) -> list[str]:
    """Names of the types of live objects holding ``der`` in any encoding."""
    needles = key_encodings(der)
    exclude = {id(der), id(keep), *(id(n) for n in needles)}
    found = []
    for obj in live_buffers():
        if id(obj) in exclude:
            continue
        data = obj.encode("latin-1", "ignore") if isinstance(obj, str) else bytes(obj)
        if any(needle in data for needle in needles):
            found.append(type(obj).__name__)
    return found


def test_no_key_copy_left_in_python_objects(pki: PKI) -> None:
    issued = pki.issue()
    secret = bytes(issued.key)
    from nitrotls.secrets import wipe

    key = bytearray(issued.key)
    wipe(issued.key)
    contexts = [tls.context_from_memory(issued.chain, key)]
    wipe(key)
    gc.collect()
    assert find_key(secret, contexts) == []


def test_key_scan_finds_a_leak(pki: PKI) -> None:
    """The scanner itself works: a PEM copy parked in a module is found."""
    issued = pki.issue()
    secret = bytes(issued.key)
    tls._test_leak = ssl.DER_cert_to_PEM_cert(secret)  # type: ignore[attr-defined]
    try:
        assert find_key(secret, []) != []
    finally:
        del tls._test_leak  # type: ignore[attr-defined]


def test_probe_gives_libssl_nothing_unless_the_context_sits_beside_the_guess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A guessed ``SSL*`` reaches libssl only after the next word proved to be the context's
    address: an object of another layout is refused by that read alone."""
    native = tls._load_native()
    if native is None or not tls._layout_known():
        pytest.skip("the direct path is not tried on this interpreter")
    handed: list[int] = []
    monkeypatch.setattr(native, "_get_fd", lambda pointer: handed.append(pointer) or -1)
    monkeypatch.setattr(tls, "_wrap_probe", lambda ctx, sock: bytearray(b"x" * 64))
    assert native.ssl_offset() is None
    assert native.ctx_pointer(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)) is None
    assert handed == []


def test_context_pointer_is_the_one_libssl_uses() -> None:
    """Options changed through Python are what libssl reads through the pointer found."""
    native = tls._load_native()
    if native is None or not tls._layout_known():
        pytest.skip("the direct path is not tried on this interpreter")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pointer = native.ctx_pointer(ctx)
    assert pointer is not None
    for flip in (ssl.OP_ENABLE_MIDDLEBOX_COMPAT, ssl.OP_NO_TICKET):
        ctx.options ^= flip
        assert int(native._options(pointer)) == int(ctx.options)
    assert native.ctx_pointer(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)) != pointer


def test_without_libssl_access_the_policy_narrows_and_says_so(
    pki: PKI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the groups cannot be set through libssl, P-256 alone is offered and a warning
    names what is lost."""
    monkeypatch.setattr(tls, "_native_cache", [None])
    monkeypatch.setattr(tls, "_access_cache", [])  # nothing learnt here outlives the test
    with caplog.at_level("WARNING", logger="nitrotls.server.tls"):
        served = served_from(pki.issue())
    assert "P-256 only" in caplog.text and "resumption on" in caplog.text
    assert handshake_succeeds(served.context, "P-256")
    assert not handshake_succeeds(served.context, "X25519")


def handshake_succeeds(context: ssl.SSLContext, groups: str) -> bool:
    """Whether ``openssl s_client`` offering only ``groups`` completes a handshake."""
    openssl = require_tool("openssl")
    with tls_server(context, handshakes=1) as port:
        result = subprocess.run(
            [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-groups", groups, "-brief"],
            input=b"",
            capture_output=True,
            timeout=10,
        )
    return result.returncode == 0


def test_an_unchecked_release_is_named_in_the_fallback_warning(
    pki: PKI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On a CPython release whose layout was not checked, no probe runs and the warning says
    which release this is and what to do."""
    native = tls._load_native()
    if native is None:
        pytest.skip("libssl not reachable from ctypes on this platform")
    monkeypatch.setattr(tls, "_native_cache", [native])
    monkeypatch.setattr(tls, "_access_cache", [])
    monkeypatch.setattr(tls, "_CHECKED_RELEASES", ((2, 7),))
    monkeypatch.setattr(native, "_get_fd", lambda pointer: pytest.fail("probed"))
    with caplog.at_level("WARNING", logger="nitrotls.server.tls"):
        served_from(pki.issue())
    running = ".".join(map(str, sys.version_info[:3]))
    assert f"{running} is not a checked release (CPython 2.7" in caplog.text
    assert "docs/server.md" in caplog.text
