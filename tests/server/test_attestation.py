"""The attestation endpoint in every mode: document verifies, binds the served SPKI and nonce."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nitrotls import binding
from nitrotls.attestation import Policy
from nitrotls.nsm import SimulatedNSM, measure_image, trusted_verifier
from nitrotls.server.attest import RateLimiter, decode_nonce, wants_json
from nitrotls.server.identity import ContextHolder
from nitrotls.server.runtime import ATTEST_ALPN, ServeOptions, Upstream
from nitrotls.transport.address import Address

from .conftest import PKI, open_tls, port_of, read_response, running, served_from, upstream_server

PATH = "/.well-known/nitrotls/attestation"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "main-image"
    path.mkdir()
    (path / "app.py").write_text("print('main enclave')\n")
    return path


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def check_document(
    document: bytes,
    image: Path,
    leaf: bytes,
    nonce: bytes,
    bundle_id: bytes,
    tag: str = binding.TLS_TAG,
) -> None:
    verified = trusted_verifier(True).verify(
        document, Policy(accepted_pcrs=(measure_image(image),), nonce=nonce)
    )
    bound = binding.decode(verified.user_data)
    spki = (
        x509.load_der_x509_certificate(leaf)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert bound.spki_sha384 == hashlib.sha384(spki).digest()
    assert bound.bundle_id == bundle_id
    assert bound.tag == tag
    assert verified.nonce == nonce


async def attest_on(
    writer: asyncio.StreamWriter,
    reader: asyncio.StreamReader,
    nonce: bytes,
    accept: str = "application/cose",
) -> tuple[int, dict[str, str], bytes]:
    target = f"{PATH}?nonce={b64url(nonce)}"
    writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n".encode())
    return await read_response(reader)


def proxy_options(upstream_url: str, **kw: object) -> ServeOptions:
    return ServeOptions(
        listen=Address.parse("tcp://127.0.0.1:0"), upstream=Upstream.parse(upstream_url), **kw
    )  # type: ignore[arg-type]


def test_proxy_mode_document_binds_spki_and_nonce(pki: PKI, image: Path) -> None:
    async def scenario() -> None:
        issued = pki.issue()
        holder = ContextHolder(served_from(issued, bundle_id=b"\x07" * 16))
        source = SimulatedNSM(image)
        async with upstream_server() as up, running(proxy_options(up.url), holder, source) as s:
            reader, writer = await open_tls(port_of(s), pki.client_context())
            nonce = secrets.token_bytes(32)
            status, headers, body = await attest_on(writer, reader, nonce)
            assert status == 200
            assert headers["content-type"] == "application/cose"
            assert headers["cache-control"] == "no-store"
            check_document(body, image, issued.leaf, nonce, b"\x07" * 16)
            # The same connection goes on to the application.
            writer.write(b"GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["target"] == "/after"
            assert up.requests == 1  # the attestation request never reached upstream
            assert s.metrics.attestation_requests == 1
            writer.close()

    asyncio.run(scenario())


def test_json_answer_when_asked(pki: PKI, image: Path) -> None:
    async def scenario() -> None:
        issued = pki.issue()
        holder = ContextHolder(served_from(issued))
        async with (
            upstream_server() as up,
            running(proxy_options(up.url), holder, SimulatedNSM(image)) as s,
        ):
            reader, writer = await open_tls(port_of(s), pki.client_context())
            nonce = secrets.token_bytes(16)
            status, headers, body = await attest_on(writer, reader, nonce, "application/json")
            assert status == 200 and headers["content-type"] == "application/json"
            document = base64.b64decode(json.loads(body)["document"])
            check_document(document, image, issued.leaf, nonce, b"\x01" * 16)
            writer.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "query",
    [
        f"nonce={b64url(b'x' * 15)}",
        f"nonce={b64url(b'x' * 65)}",
        "",
        "nonce=not*base64",
        f"nonce={b64url(b'x' * 16)}&nonce={b64url(b'y' * 16)}",
    ],
)
def test_bad_nonces_refused(pki: PKI, image: Path, query: str) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with (
            upstream_server() as up,
            running(proxy_options(up.url), holder, SimulatedNSM(image)) as s,
        ):
            reader, writer = await open_tls(port_of(s), pki.client_context())
            writer.write(f"GET {PATH}?{query} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
            status, _, body = await read_response(reader)
            assert status == 400 and b"nonce" in body
            assert s.metrics.attestation_requests == 0
            writer.close()

    asyncio.run(scenario())


def test_rate_limited_per_client(pki: PKI, image: Path) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        options = proxy_options("http://127.0.0.1:9", attestation_rate=0.001, attestation_burst=2)
        async with running(options, holder, SimulatedNSM(image)) as s:
            reader, writer = await open_tls(port_of(s), pki.client_context())
            statuses = []
            for _ in range(3):
                status, headers, _ = await attest_on(writer, reader, secrets.token_bytes(16))
                statuses.append(status)
            assert statuses == [200, 200, 429]
            assert int(headers["retry-after"]) >= 1
            writer.close()

    asyncio.run(scenario())


def test_insecure_identity_is_tagged(pki: PKI, image: Path) -> None:
    async def scenario() -> None:
        issued = pki.issue()
        holder = ContextHolder(served_from(issued, bundle_id=b"", insecure=True))
        async with running(proxy_options("http://127.0.0.1:9"), holder, SimulatedNSM(image)) as s:
            reader, writer = await open_tls(port_of(s), pki.client_context())
            nonce = secrets.token_bytes(24)
            status, _, body = await attest_on(writer, reader, nonce)
            assert status == 200
            check_document(body, image, issued.leaf, nonce, b"", binding.TLS_INSECURE_TAG)
            writer.close()

    asyncio.run(scenario())


def test_each_connection_attests_the_leaf_it_was_shown(pki: PKI, image: Path) -> None:
    async def scenario() -> None:
        old, new = pki.issue(), pki.issue()
        holder = ContextHolder(served_from(old, seq=1))
        async with running(proxy_options("http://127.0.0.1:9"), holder, SimulatedNSM(image)) as s:
            before = await open_tls(port_of(s), pki.client_context())
            holder.swap(served_from(new, seq=2))
            after = await open_tls(port_of(s), pki.client_context())
            for (reader, writer), leaf in ((before, old.leaf), (after, new.leaf)):
                peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                assert peer == leaf
                nonce = secrets.token_bytes(16)
                status, _, body = await attest_on(writer, reader, nonce)
                assert status == 200
                check_document(body, image, leaf, nonce, b"\x01" * 16)
                writer.close()

    asyncio.run(scenario())


async def _echo_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data[::-1])
        await writer.drain()
    writer.close()


def test_raw_mode_relays_bytes_and_attests_by_alpn(pki: PKI, image: Path) -> None:
    async def scenario() -> None:
        issued = pki.issue()
        holder = ContextHolder(served_from(issued, alpn=(ATTEST_ALPN,)))
        raw = await asyncio.start_server(_echo_tcp, "127.0.0.1", 0)
        raw_port = raw.sockets[0].getsockname()[1]
        options = ServeOptions(
            listen=Address.parse("tcp://127.0.0.1:0"),
            upstream=Upstream.parse(f"tcp://127.0.0.1:{raw_port}"),
        )
        assert options.alpn == (ATTEST_ALPN,)
        async with running(options, holder, SimulatedNSM(image)) as s:
            plain_ctx = ssl.create_default_context(cafile=str(pki.root_pem))
            reader, writer = await open_tls(port_of(s), plain_ctx)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")  # not HTTP to us: relayed as bytes
            assert await asyncio.wait_for(reader.readexactly(18), 10) == b"\n\r\n\r1.1/PTTH / TEG"
            writer.close()
            attest_ctx = ssl.create_default_context(cafile=str(pki.root_pem))
            attest_ctx.set_alpn_protocols([ATTEST_ALPN])
            reader, writer = await open_tls(port_of(s), attest_ctx)
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == ATTEST_ALPN
            nonce = secrets.token_bytes(32)
            status, _, body = await attest_on(writer, reader, nonce)
            assert status == 200
            check_document(body, image, issued.leaf, nonce, b"\x01" * 16)
            writer.write(b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n")
            status, _, _ = await read_response(reader)
            assert status == 404
            writer.close()
        raw.close()

    asyncio.run(scenario())


def test_decode_nonce_accepts_padded_and_unpadded() -> None:
    nonce = bytes(range(20))
    padded = base64.urlsafe_b64encode(nonce)
    assert decode_nonce(b"/p?nonce=" + padded) == nonce
    assert decode_nonce(b"/p?a=1&nonce=" + padded.rstrip(b"=")) == nonce
    with pytest.raises(binding.BindingError):
        decode_nonce(b"/p?nonce=" + base64.b64encode(b"\xff" * 20).replace(b"_", b"/") + b"+")


def test_rate_limiter_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")
    assert limiter.retry_after("a") >= 1
    now[0] = 0.5
    assert limiter.allow("a")
    assert not limiter.allow("a")


def test_accept_negotiation() -> None:
    assert not wants_json(None)
    assert not wants_json(b"*/*")
    assert wants_json(b"application/json")
    assert not wants_json(b"application/cose, application/json;q=0.5")
