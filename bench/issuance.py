"""One certificate issuance against Pebble: the nitrotls generator beside `certbot certonly`.

Run:  .venv/bin/python bench/issuance.py [--rounds 7]

Both sides use the same Pebble (started here on 127.0.0.1, PEBBLE_VA_NOSLEEP=1, no authorization
reuse), HTTP-01 through one responder on Pebble's httpPort (it serves the generator's store and
certbot's webroot), an account registered beforehand (new account excluded), a fresh P-256 key
per issuance, and are interleaved round by round (the order alternates).

- nitrotls (daemon): one renewal inside a running generator, as the daemon does it: KMS
  GenerateDataKey with a Recipient attestation (local KMS in this process, simulated NSM), seal,
  CSR, ACME order, bundle bound by a second attestation, publish to a directory store.
- nitrotls (CLI): `nitrotls generator run --once --force` as a new process: the same plus Python
  start-up and unsealing the stored ACME account through KMS (a third attestation).
- certbot: `certbot certonly --webroot --force-renewal` (Debian's certbot) as a new process.

Reported: median milliseconds per issuance, and each nitrotls median / certbot's median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

import boto3

from nitrotls import home
from nitrotls.ca import start_responder
from nitrotls.config import CASection, Config, GeneratorSection, KMSSection, StoreSection
from nitrotls.generator import Runner, StepLog, make_issuer
from nitrotls.kms.local import DEV_ACCESS_KEY, DEV_PRINCIPAL, DEV_SECRET, running_server
from nitrotls.nsm import SimulatedNSM, measure_image
from nitrotls.store import DirectoryStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pebble_fixtures import PebbleStack, pebble_stack

ALIAS = "alias/nitrotls-bench"
DOMAIN = "bench.nitrotls.test"


class Challenges:
    """One responder for both clients: the generator's store, then certbot's webroot."""

    def __init__(self, store: DirectoryStore, webroot: Path) -> None:
        self.store, self.webroot = store, webroot

    def get_challenge(self, token: str) -> str | None:
        found = self.store.get_challenge(token)
        if found is not None:
            return found
        path = self.webroot / ".well-known" / "acme-challenge" / token
        return path.read_text().strip() if path.is_file() else None


def key_policy(generator: Mapping[int, bytes], main: Mapping[int, bytes]) -> str:
    def pcrs(values: Mapping[int, bytes]) -> dict[str, str]:
        return {f"kms:RecipientAttestation:PCR{i}": values[i].hex() for i in (0, 1, 2)}

    def allow(sid: str, action: object, condition: object = None) -> dict[str, object]:
        statement: dict[str, object] = {
            "Sid": sid,
            "Effect": "Allow",
            "Principal": {"AWS": DEV_PRINCIPAL},
            "Action": action,
            "Resource": "*",
        }
        if condition is not None:
            statement["Condition"] = condition
        return statement

    account = {"Null": {"kms:EncryptionContext:nitrotls:acme-account": "false"}}
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                allow("Admin", ["kms:PutKeyPolicy", "kms:CreateAlias", "kms:Describe*"]),
                allow("Seal", "kms:GenerateDataKey", {"StringEqualsIgnoreCase": pcrs(generator)}),
                allow(
                    "Account", "kms:Decrypt", {"StringEqualsIgnoreCase": pcrs(generator), **account}
                ),
                allow("Open", "kms:Decrypt", {"StringEqualsIgnoreCase": pcrs(main)}),
            ],
        }
    )


def image(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "app.py").write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    certbot = shutil.which("certbot")
    if certbot is None:
        sys.exit("certbot is not installed (Debian package certbot; `make bench-deps`)")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        os.environ.update(
            {
                "NITROTLS_HOME": str(root / "home"),
                "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": DEV_SECRET,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        home.set_home(None)
        store = DirectoryStore(root / "store")
        webroot = root / "webroot"
        webroot.mkdir()
        server, thread = start_responder(Challenges(store, webroot))
        try:
            with (
                pebble_stack(root / "pebble", http_port=server.server_address[1]) as stack,
                running_server(trust_dev_root=True) as kms_endpoint,
            ):
                run(stack, store, kms_endpoint, root, webroot, certbot, args.rounds)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def run(
    stack: PebbleStack,
    store: DirectoryStore,
    kms_endpoint: str,
    root: Path,
    webroot: Path,
    certbot: str,
    rounds: int,
) -> None:
    generator_image = image(root / "generator-image", "print('generator')\n")
    main_image = image(root / "main-image", "print('main')\n")
    kms = boto3.client("kms", endpoint_url=kms_endpoint, region_name="us-east-1")
    policy = key_policy(measure_image(generator_image), measure_image(main_image))
    arn = kms.create_key(Policy=policy)["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=ALIAS, TargetKeyId=arn)
    config = Config(
        generator=GeneratorSection(domains=(DOMAIN,)),
        kms=KMSSection(endpoint=kms_endpoint, key_id=ALIAS),
        store=StoreSection(spec=f"dir:{root / 'store'}"),
        ca=CASection(server=f"acme:{stack.directory_url}", ca_bundle=stack.ca_bundle),
    )
    issuer = make_issuer(config, SimulatedNSM(generator_image), store=store, log=StepLog())
    runner = Runner(issuer)
    runner.once(force=True)  # account registration and first issuance: excluded

    cli = [
        sys.executable, "-c", "from nitrotls.cli import main; main()",
        "--enclave", f"simulated:{generator_image}",
        "generator", "run", "--once", "--force", "--domain", DOMAIN,
        "--kms-endpoint", kms_endpoint, "--kms-key-id", ALIAS,
        "--store", f"dir:{root / 'store'}",
        "--ca", f"acme:{stack.directory_url}", "--ca-bundle", str(stack.ca_bundle),
    ]  # fmt: skip
    certbot_dirs = [
        "--config-dir", str(root / "certbot" / "config"),
        "--work-dir", str(root / "certbot" / "work"),
        "--logs-dir", str(root / "certbot" / "logs"),
    ]  # fmt: skip
    certbot_env = {**os.environ, "REQUESTS_CA_BUNDLE": str(stack.ca_bundle)}
    common = ["--non-interactive", "--server", stack.directory_url, *certbot_dirs]
    register = [certbot, "register", *common, "--agree-tos", "--register-unsafely-without-email"]
    subprocess.run(register, env=certbot_env, check=True, capture_output=True)
    certonly = [
        certbot, "certonly", *common, "--webroot", "-w", str(webroot), "-d", DOMAIN,
        "--cert-name", "bench", "--force-renewal", "--key-type", "ecdsa",
        "--elliptic-curve", "secp256r1",
    ]  # fmt: skip
    subprocess.run(certonly, env=certbot_env, check=True, capture_output=True)  # warm-up

    def in_process() -> None:
        assert runner.once(force=True).issued

    def as_process(argv: list[str], env: Mapping[str, str] | None = None) -> Callable[[], None]:
        def go() -> None:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{argv[0]} failed:\n{done.stderr[-2000:]}")

        return go

    sides: dict[str, Callable[[], None]] = {
        "nitrotls (daemon)": in_process,
        "nitrotls (CLI)": as_process(cli),
        "certbot": as_process(certonly, certbot_env),
    }
    timings: dict[str, list[float]] = {side: [] for side in sides}
    for round_no in range(rounds):
        order = list(sides) if round_no % 2 == 0 else list(reversed(sides))
        for side in order:
            started = time.perf_counter()
            sides[side]()
            timings[side].append(time.perf_counter() - started)
    report(stack, rounds, timings)
    breakdown(cli)
    issuer.close()


def breakdown(cli: list[str]) -> None:
    """Where one CLI issuance spends its time: each step's log line after process start."""
    started = time.time()
    done = subprocess.run([*cli, "--log-json"], capture_output=True, text=True, check=True)
    print("\nnitrotls (CLI) steps, ms after process start:")
    for line in done.stderr.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        stamp = datetime.fromisoformat(entry["time"]).timestamp()
        print(f"  {(stamp - started) * 1000:>6.0f}  {entry['step']:<8} {entry['message'][:70]}")
    print(f"  {(time.time() - started) * 1000:>6.0f}  exit")


def report(stack: PebbleStack, rounds: int, timings: dict[str, list[float]]) -> None:
    version = subprocess.run(["certbot", "--version"], capture_output=True, text=True, check=False)
    print(f"Pebble {stack.directory_url}; {rounds} interleaved issuances per side (HTTP-01)")
    print(f"{version.stdout.strip() or version.stderr.strip()}; KMS local, NSM simulated\n")
    print(f"{'side':<20}{'median ms':>10}{'min ms':>9}{'max ms':>9}")
    for side, values in timings.items():
        print(
            f"{side:<20}{statistics.median(values) * 1000:>10.0f}"
            f"{min(values) * 1000:>9.0f}{max(values) * 1000:>9.0f}"
        )
    anchor = statistics.median(timings["certbot"])
    print()
    for side in ("nitrotls (daemon)", "nitrotls (CLI)"):
        print(f"{side} / certbot: {statistics.median(timings[side]) / anchor:.3f}")


if __name__ == "__main__":
    main()
