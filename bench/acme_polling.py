"""One ACME HTTP-01 issuance against Pebble: nitrotls's AcmeCA beside the acme library's own flow.

Run:  .venv/bin/python bench/acme_polling.py [--rounds 7]

Both sides use the same Pebble (started here on 127.0.0.1, PEBBLE_VA_NOSLEEP=1), the same
HTTP-01 responder serving from the same directory store, an already registered account, and a
fresh CSR per issuance; the two are interleaved within each round. The anchor is what a client
gets from the `acme` library used as documented: `new_order`, `answer_challenge`, then
`poll_and_finalize` (whose polling sleeps a fixed second per round). nitrotls polls from 50 ms
with backoff. Reported: median milliseconds per issuance and nitrotls / anchor.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import josepy
from acme import challenges, client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nitrotls.ca import AcmeCA, start_responder
from nitrotls.store import DirectoryStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pebble_fixtures import PebbleStack, pebble_stack


def csr_pem(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def anchor_issuer(stack: PebbleStack, store: DirectoryStore) -> Callable[[bytes], None]:
    """The acme library's documented flow, account registered up front."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = josepy.JWKEC(key=key)
    net = client.ClientNetwork(jwk, alg=josepy.ES256, user_agent="bench")
    net.verify_ssl = str(stack.ca_bundle)  # type: ignore[assignment]
    acme = client.ClientV2(client.ClientV2.get_directory(stack.directory_url, net), net)
    acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))

    def issue(pem: bytes) -> None:
        order = acme.new_order(pem)
        tokens = []
        for authz in order.authorizations:
            challb = next(
                c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)
            )
            response, validation = challb.response_and_validation(jwk)
            token = challb.chall.encode("token")
            store.put_challenge(token, validation)
            tokens.append(token)
            acme.answer_challenge(challb, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
        done = acme.poll_and_finalize(order, deadline)
        assert done.fullchain_pem
        for token in tokens:
            store.delete_challenge(token)

    return issue


def nitrotls_issuer(stack: PebbleStack, store: DirectoryStore) -> Callable[[bytes], None]:
    ca = AcmeCA(
        stack.directory_url,
        ec.generate_private_key(ec.SECP256R1()),
        ca_bundle=stack.ca_bundle,
        http01_publisher=store,
    )
    ca.account()

    def issue(pem: bytes) -> None:
        assert len(ca.issue(pem)) >= 2

    return issue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        store = DirectoryStore(Path(scratch) / "store")
        server, thread = start_responder(store)
        try:
            with pebble_stack(
                Path(scratch) / "pebble", http_port=server.server_address[1]
            ) as stack:
                run(stack, store, args.rounds)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def run(stack: PebbleStack, store: DirectoryStore, rounds: int) -> None:
    sides = {"nitrotls": nitrotls_issuer(stack, store), "acme library": anchor_issuer(stack, store)}
    timings: dict[str, list[float]] = {side: [] for side in sides}
    for round_no in range(rounds):
        for side, issue in sides.items():
            pem = csr_pem(f"bench-{round_no}-{len(timings[side])}.nitrotls.test")
            started = time.perf_counter()
            issue(pem)
            timings[side].append(time.perf_counter() - started)
    print(f"Pebble {stack.directory_url}; {rounds} interleaved issuances per side (HTTP-01)\n")
    print(f"{'side':<14}{'median ms':>10}{'min ms':>9}{'max ms':>9}")
    for side, values in timings.items():
        print(
            f"{side:<14}{statistics.median(values) * 1000:>10.0f}"
            f"{min(values) * 1000:>9.0f}{max(values) * 1000:>9.0f}"
        )
    ours = statistics.median(timings["nitrotls"])
    anchor = statistics.median(timings["acme library"])
    print(f"\nnitrotls / acme library: {ours / anchor:.3f}")


if __name__ == "__main__":
    main()
