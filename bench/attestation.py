"""Attestation verification throughput: nitrotls beside the cryptographic floor, same process.

Run:  .venv/bin/python bench/attestation.py [--rounds 7] [--document PATH]

The document is a real AWS one from ../shared/nitro-vectors (verified as of its own timestamp),
so the chain is AWS's: root, regional, zonal, instance, leaf; P-384 / ECDSA-SHA384 throughout.

Three modes, each with its floor: the work no verifier can skip, done with `cryptography`
directly on inputs prepared outside the timed loop (no CBOR, no checks, no caching logic):

* cold  - a fresh Verifier per document. Floor: load the 5 certificates from DER, take the 4
          issuer keys and the leaf key, verify the 4 certificate signatures and the COSE one.
* warm  - root and intermediates cached, leaf not. Floor: load the leaf from DER, take its key,
          verify its signature under the (already loaded) instance CA key, verify the COSE one.
* hot   - everything cached. Floor: verify the COSE signature under the (already loaded) leaf key.

The floor takes each certificate's signed bytes with `tbs_certificate_bytes`, the only way
`cryptography` offers (nitrotls slices them from the DER instead, which is cheaper), and checks
signatures with the issuer's key directly (faster than `verify_directly_issued_by`).
nitrotls does everything else too: strict CBOR parsing, field syntax, root fingerprint,
extension checks, validity at the instant on every call, cache lookups. Reported: documents per
second (median over rounds) and the median of the per-round ratios nitrotls / floor; within a
round the two alternate in short blocks, so load from other processes falls on both alike.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from nitrotls.attestation import Verifier, parse_document
from nitrotls.attestation.cose import der_signature, sig_structure

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DOCUMENT = ROOT.parent / "shared" / "nitro-vectors" / "docs" / "script_attestation.bin"
ES384 = ec.ECDSA(hashes.SHA384())
ITERATIONS = {"cold": 150, "warm": 300, "hot": 600}
FLOORS = {
    "cold": "5 x load DER + public_key, 4 x certificate ECDSA verify, 1 x COSE ECDSA verify",
    "warm": "load leaf DER + public_key, 1 x certificate ECDSA verify, 1 x COSE ECDSA verify",
    "hot": "1 x COSE ECDSA verify (leaf key already loaded)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--document", type=Path, default=DEFAULT_DOCUMENT)
    args = parser.parse_args()
    data = args.document.read_bytes()
    at = parse_document(data).document.timestamp
    print(f"document: {args.document.name} ({len(data)} bytes), as of {at.isoformat()}")
    print(f"rounds: {args.rounds}; iterations per round: {ITERATIONS}\n")
    print(f"{'mode':<6}{'nitrotls docs/s':>17}{'floor docs/s':>15}{'ratio':>8}")
    for mode, (ours, floor) in modes(data, at).items():
        ours_rate, floor_rate, ratio = measure(ours, floor, ITERATIONS[mode], args.rounds)
        print(f"{mode:<6}{ours_rate:>17,.0f}{floor_rate:>15,.0f}{ratio:>8.3f}")
    print("\nfloor per document (cryptography, inputs prepared outside the timed loop):")
    for mode, work in FLOORS.items():
        print(f"  {mode:<5} {work}")


def modes(data: bytes, at: datetime) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    parsed = parse_document(data)
    document = parsed.document
    ders = [*document.cabundle, document.certificate]
    message = sig_structure(parsed.protected, parsed.payload)
    signature = der_signature(parsed.signature)
    certs = [x509.load_der_x509_certificate(der) for der in ders]
    instance_key = _ec_key(certs[-2])
    leaf_key = _ec_key(certs[-1])

    def cold_floor() -> None:
        loaded = [x509.load_der_x509_certificate(der) for der in ders]
        keys = [_ec_key(cert) for cert in loaded]
        for issuer_key, child in zip(keys, loaded[1:], strict=False):
            issuer_key.verify(child.signature, child.tbs_certificate_bytes, ES384)
        keys[-1].verify(signature, message, ES384)

    def warm_floor() -> None:
        leaf = x509.load_der_x509_certificate(document.certificate)
        instance_key.verify(leaf.signature, leaf.tbs_certificate_bytes, ES384)
        _ec_key(leaf).verify(signature, message, ES384)

    def hot_floor() -> None:
        leaf_key.verify(signature, message, ES384)

    def cold() -> None:
        Verifier().authenticate(data, at)

    warm_verifier = Verifier()
    warm_verifier.authenticate(data, at)
    leaf_link = (document.certificate, document.cabundle[-1])

    def warm() -> None:
        # Forget the proven leaf (bench-only reach into the cache), keep root and intermediates.
        warm_verifier._chain._links.pop(leaf_link, None)
        warm_verifier.authenticate(data, at)

    hot_verifier = Verifier()
    hot_verifier.authenticate(data, at)

    def hot() -> None:
        hot_verifier.authenticate(data, at)

    return {"cold": (cold, cold_floor), "warm": (warm, warm_floor), "hot": (hot, hot_floor)}


def _ec_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def measure(
    ours: Callable[[], None], floor: Callable[[], None], iterations: int, rounds: int
) -> tuple[float, float, float]:
    """Median documents/second of each and the median per-round ratio.

    Within a round the two alternate in short blocks (order flipping each block), so bursts of
    load from other processes fall on both alike.
    """
    ours_rates, floor_rates, ratios = [], [], []
    ours()  # warm up both paths
    floor()
    block = max(1, iterations // 10)
    for _ in range(rounds):
        ours_time = floor_time = 0.0
        for number in range(iterations // block):
            if number % 2:
                ours_time += _elapsed(ours, block)
                floor_time += _elapsed(floor, block)
            else:
                floor_time += _elapsed(floor, block)
                ours_time += _elapsed(ours, block)
        count = block * (iterations // block)
        ours_rates.append(count / ours_time)
        floor_rates.append(count / floor_time)
        ratios.append(floor_time / ours_time)
    return statistics.median(ours_rates), statistics.median(floor_rates), statistics.median(ratios)


def _elapsed(function: Callable[[], None], iterations: int) -> float:
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(iterations):
            function()
        return time.perf_counter() - start
    finally:
        gc.enable()


if __name__ == "__main__":
    main()
