"""connect(): the connection is handed over only when the enclave is proven."""

from __future__ import annotations

from pathlib import Path

import h11
import pytest

from nitrotls.attestation import Policy, Verifier, errors
from nitrotls.client import (
    AttestationExchangeError,
    BindingMismatchError,
    ConnectFailedError,
    InsecureServerError,
    connect,
)
from nitrotls.nsm import SimulatedNSM, measure_image

from attested_server import attested_server, relay
from certs import PKI, make_leaf


def _get(sock: object, host: str) -> bytes:
    conn = h11.Connection(h11.CLIENT)
    sock.sendall(  # type: ignore[attr-defined]
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", host)]))
        + conn.send(h11.EndOfMessage())
    )
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))  # type: ignore[attr-defined]
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return body


def test_accepts_the_measured_enclave_and_hands_over_the_connection(
    server, pki: PKI, policy: Policy, verifier: Verifier
) -> None:
    with connect(server.url, policy, verifier=verifier, ca=pki.ca_file) as conn:
        assert conn.verdict.matched_set == 0
        assert conn.verdict.bundle_id == b"\x01" * 16
        assert conn.verdict.nonce is not None and len(conn.verdict.nonce) == 32
        assert _get(conn.socket, "localhost") == b"hello from the enclave"
    assert server.log.connections[0][0].startswith("/.well-known/nitrotls/attestation?nonce=")
    assert server.log.connections[0][1] == "/"


def test_refuses_wrong_measurements(
    server, pki: PKI, other_image: Path, verifier: Verifier
) -> None:
    wrong = Policy(accepted_pcrs=(measure_image(other_image),))
    with pytest.raises(errors.PCRMismatchError):
        connect(server.url, wrong, verifier=verifier, ca=pki.ca_file)


def test_refuses_untrusted_root_without_dev(server, pki: PKI, policy: Policy) -> None:
    with pytest.raises(errors.UntrustedRootError):
        connect(server.url, policy, verifier=Verifier(), ca=pki.ca_file)


def test_refuses_a_debug_enclave(pki: PKI, main_image: Path, verifier: Verifier) -> None:
    debug = SimulatedNSM(main_image, debug=True)
    policy = Policy(accepted_pcrs=(measure_image(main_image),))

    def attest(user_data: bytes, nonce: bytes) -> bytes:
        return debug.attest(user_data=user_data, nonce=nonce)

    with (
        attested_server(pki.cert_file, pki.key_file, pki.leaf.der, attest) as running,
        pytest.raises(errors.DebugEnclaveError),
    ):
        connect(running.url, policy, verifier=verifier, ca=pki.ca_file)


def test_refuses_a_replayed_document(
    pki: PKI, enclave: SimulatedNSM, policy: Policy, verifier: Verifier
) -> None:
    recorded: list[bytes] = []

    def replay(user_data: bytes, nonce: bytes) -> bytes:
        if not recorded:
            recorded.append(enclave.attest(user_data=user_data, nonce=nonce))
        return recorded[0]

    with attested_server(pki.cert_file, pki.key_file, pki.leaf.der, replay) as running:
        connect(running.url, policy, verifier=verifier, ca=pki.ca_file).close()
        with pytest.raises(errors.NonceMismatchError):
            connect(running.url, policy, verifier=verifier, ca=pki.ca_file)


def test_refuses_insecure_bundled_cert_server_unless_allowed(
    pki: PKI, enclave: SimulatedNSM, policy: Policy, verifier: Verifier
) -> None:
    def attest(user_data: bytes, nonce: bytes) -> bytes:
        return enclave.attest(user_data=user_data, nonce=nonce)

    with attested_server(
        pki.cert_file, pki.key_file, pki.leaf.der, attest, insecure=True
    ) as running:
        with pytest.raises(InsecureServerError):
            connect(running.url, policy, verifier=verifier, ca=pki.ca_file)
        with connect(
            running.url, policy, verifier=verifier, ca=pki.ca_file, allow_insecure_dev=True
        ) as conn:
            assert conn.verdict.insecure


def test_refuses_a_man_in_the_middle_with_a_valid_certificate(
    server, pki: PKI, policy: Policy, verifier: Verifier, tmp_path: Path
) -> None:
    mitm_cert, mitm_key = make_leaf(pki.ca).write(tmp_path, "mitm")
    with (
        relay(str(mitm_cert), str(mitm_key), server.port, pki.ca_file) as port,
        pytest.raises(BindingMismatchError, match="terminates TLS"),
    ):
        connect(f"https://localhost:{port}", policy, verifier=verifier, ca=pki.ca_file)
    # The relay did forward the attestation request: the enclave really answered it.
    assert any(c and c[0].startswith("/.well-known/") for c in server.log.connections)


def test_refuses_a_server_without_the_endpoint(
    pki: PKI, policy: Policy, verifier: Verifier
) -> None:
    def not_an_enclave(user_data: bytes, nonce: bytes) -> bytes:
        return b"\x00not a document"

    with (
        attested_server(pki.cert_file, pki.key_file, pki.leaf.der, not_an_enclave) as running,
        pytest.raises(errors.AttestationError),
    ):
        connect(running.url, policy, verifier=verifier, ca=pki.ca_file)


def test_ordinary_certificate_validation_still_applies(
    server, policy: Policy, verifier: Verifier
) -> None:
    with pytest.raises(ConnectFailedError, match="TLS"):
        connect(server.url, policy, verifier=verifier)  # the test CA is not in the system roots


def test_unreachable_endpoint_is_a_typed_error(policy: Policy, verifier: Verifier) -> None:
    with pytest.raises(ConnectFailedError, match="cannot reach"):
        connect("https://127.0.0.1:1", policy, verifier=verifier, timeout=2)


def test_exchange_rejects_non_cose_reply() -> None:
    from nitrotls.client.exchange import AttestationExchange

    exchange = AttestationExchange("h", b"n" * 32)
    exchange.request_bytes()
    exchange.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi")
    with pytest.raises(AttestationExchangeError, match="application/cose"):
        exchange.document()


def test_exchange_bounds_the_reply() -> None:
    from nitrotls.client.exchange import MAX_DOCUMENT, AttestationExchange

    exchange = AttestationExchange("h", b"n" * 32)
    exchange.request_bytes()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/cose\r\n"
        f"Content-Length: {MAX_DOCUMENT * 4}\r\n\r\n"
    )
    with pytest.raises(AttestationExchangeError, match="larger than"):
        exchange.feed(head.encode() + b"x" * (MAX_DOCUMENT + 1))


def test_a_context_without_verification_is_refused(
    server, policy: Policy, verifier: Verifier
) -> None:
    import ssl

    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    with pytest.raises(ConnectFailedError, match="must verify"):
        connect(server.url, policy, verifier=verifier, context=lax)
