"""Local KMS throughput: Decrypt with a Recipient over HTTP, beside the floor, same run.

Run:  .venv/bin/python bench/kms.py [--rounds 5] [--requests 40] [--clients 8] [--processes 1]
                                   [--client-nice 10]

The server runs as `nitrotls kms serve` in its own process (its own interpreter lock), with the
dev root trusted and a deployment key policy (build_key_policy) on the key. The clients are
``--clients`` boto3 KMS clients, each in a thread of its own, spread over ``--processes`` load
generator processes (spawned, not this one), each sending ``--requests`` Decrypt calls per round
with a Recipient. The load generators run at niceness ``--client-nice`` (10): on a 2-core
machine they share the cores with the server, and at equal priority the scheduler hands the
server only a fair share of a core while clients wait for it (measured: 0.46 x the floor at
niceness 0 against 0.57 x at 10, same code). Niceness only orders who runs first; every CPU
second the clients use is still counted and shown. Every request also needs, on the
client, a fresh RSA key and attestation document; those are made before timing
(``--documents`` of them, reused round-robin), so the numbers measure the server, not the
enclave.

The floor is the work the server cannot skip per request, done in one thread of this process
with the same library calls on the same inputs: authenticate the attestation document (the same
Verifier, warm, as the server's), RSA-OAEP encrypt 32 bytes to the document's key (the CMS
envelope's key transport), and AES-256-GCM decrypt a blob of the same size. Also shown: the same
clients calling GenerateRandom without a Recipient (no crypto on the server), which is what the
clients and HTTP alone can carry on this machine.

Printed: medians over rounds (requests or operations per second) and server / floor; then CPU
time per request (from /proc, to the nanosecond) of the server process, of the client processes
(during the Decrypt rounds) and of the floor. On a small machine the clients
compete with the server for cores: "floor CPU / server CPU" is the ratio the server would reach
with a core of its own, and the "CPU bound" line is the most these CPU costs allow here at all
(the server's work holds its interpreter lock, the client threads of a process share theirs, and
all together cannot use more than the machine's cores). Rates are wall-clock: when other processes
load the machine during one phase or the other, the ratio moves either way, so compare runs on a
quiet machine, or compare the CPU lines.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ADMIN = ("bench-admin", "bench-admin-secret", "arn:aws:iam::111122223333:role/admin")
ENCLAVE = ("bench-enclave", "bench-enclave-secret", "arn:aws:iam::111122223333:role/enclave")
CONTEXT = {"nitrotls:bundle": "00" * 16, "nitrotls:name": "bench.example"}
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def start_server(home: Path) -> tuple[subprocess.Popen[str], str]:
    config = home / "kms.toml"
    entries = "".join(
        f'[[credentials]]\naccess_key = "{a}"\nsecret = "{s}"\nprincipal = "{p}"\n'
        for a, s, p in (ADMIN, ENCLAVE)
    )
    config.write_text(entries)
    config.chmod(0o600)
    command = [
        sys.executable, "-c", "from nitrotls.cli import main; main()", "--home", str(home),
        "kms", "serve", "--listen", "127.0.0.1:0", "--trust-dev-root", "--config", str(config),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    found = re.search(r"listening on (http://\S+)", process.stdout.readline())
    if found is None:
        process.kill()
        raise SystemExit("the server did not start")
    return process, found[1]


def client(url: str, who: tuple[str, str, str]) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=who[0],
        aws_secret_access_key=who[1],
        # No client-side parameter validation: the clients share this machine's CPU with the
        # server, and the server validates every member anyway.
        config=Config(
            retries={"total_max_attempts": 1}, max_pool_connections=2, parameter_validation=False
        ),
    )


def recipients(source: Any, count: int) -> list[tuple[rsa.RSAPrivateKey, bytes]]:
    made = []
    for _ in range(count):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        made.append((key, source.attest(public_key=spki)))
    return made


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process's threads so far, to the nanosecond where Linux
    offers it (``/proc/PID/task/*/schedstat``; ``/proc/PID/stat`` counts 10 ms ticks, too coarse
    for a round of a few hundred requests). NaN elsewhere."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all processes have used so far, over every core, counting time the hypervisor
    gave to others (steal) as busy (Linux ``/proc/stat``, 10 ms ticks; NaN elsewhere)."""
    try:
        ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def decrypt_call(kms: Any, blob: bytes, documents: list[bytes], n: int) -> None:
    answer = kms.decrypt(
        CiphertextBlob=blob,
        EncryptionContext=CONTEXT,
        Recipient={
            "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
            "AttestationDocument": documents[n % len(documents)],
        },
    )
    if not answer.get("CiphertextForRecipient"):
        raise RuntimeError("no CiphertextForRecipient")


def random_call(kms: Any, blob: bytes, documents: list[bytes], n: int) -> None:
    kms.generate_random(NumberOfBytes=32)


CALLS: dict[str, Callable[[Any, bytes, list[bytes], int], None]] = {
    "decrypt": decrypt_call,
    "random": random_call,
}


def client_worker(
    url: str, blob: bytes, documents: list[bytes], first: int, count: int, nice: int, pipe: Any
) -> None:
    """``count`` boto3 clients (threads) in a process of their own; runs each round it is told
    to and reports the process's CPU time."""
    os.nice(nice)  # the load generator yields the CPU to the server it measures
    clients = [client(url, ENCLAVE) for _ in range(count)]
    while (command := pipe.recv()) is not None:
        name, requests = command
        cpu = time.process_time()
        errors: list[str] = []

        def run(kms: Any, worker: int, name: str = name, requests: int = requests) -> None:
            try:
                for n in range(requests):
                    CALLS[name](kms, blob, documents, worker * requests + n)
            except Exception as error:  # reported to the parent, which stops the bench
                errors.append(f"{type(error).__name__}: {error}")  # noqa: B023 (joined below)

        threads = [
            threading.Thread(target=run, args=(kms, first + n)) for n, kms in enumerate(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pipe.send(("error", errors[0]) if errors else ("ok", time.process_time() - cpu))


class ClientPool:
    """``count`` boto3 clients, each in its own process (its own interpreter lock), as separate
    enclaves would be; the parent only starts rounds and collects CPU times."""

    def __init__(
        self, count: int, processes: int, nice: int, url: str, blob: bytes, documents: list[bytes]
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.count = count
        self._pipes = []
        self._processes = []
        for index in range(processes):
            first, end = count * index // processes, count * (index + 1) // processes
            ours, theirs = context.Pipe()
            process = context.Process(
                target=client_worker,
                args=(url, blob, documents, first, end - first, nice, theirs),
                daemon=True,
            )
            process.start()
            self._pipes.append(ours)
            self._processes.append(process)

    def run(self, name: str, requests: int) -> tuple[float, float]:
        """(requests per second, client CPU seconds per request) of one round."""
        started = time.perf_counter()
        for pipe in self._pipes:
            pipe.send((name, requests))
        replies = [pipe.recv() for pipe in self._pipes]
        elapsed = time.perf_counter() - started
        failed = [detail for status, detail in replies if status != "ok"]
        if failed:
            raise RuntimeError(f"a client failed: {failed[0]}")
        total = self.count * requests
        return total / elapsed, sum(cpu for _, cpu in replies) / total

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.kill()


def floor_rate(documents: list[bytes], operations: int, blob_size: int) -> tuple[float, float]:
    """The unavoidable per-request work, one thread: (operations per second, CPU s per op)."""
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    from nitrotls.nsm import trusted_verifier

    verifier = trusted_verifier(True)
    aead = AESGCM(AESGCM.generate_key(256))
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, os.urandom(blob_size), b"aad")
    for document in documents:  # warm, as the server's verifier is after its first requests
        verifier.authenticate(document)
    cycle = itertools.cycle(documents)
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(operations):
        verified = verifier.authenticate(next(cycle))
        public_key = load_der_public_key(verified.public_key or b"")
        aead.decrypt(nonce, sealed, b"aad")
        public_key.encrypt(os.urandom(32), OAEP)  # type: ignore[union-attr]
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    return operations / elapsed, cpu / operations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40, help="per client per round")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument(
        "--client-nice", type=int, default=10, help="niceness of the client processes"
    )
    parser.add_argument("--documents", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["NITROTLS_HOME"] = str(home)  # the dev root the server trusts
        from nitrotls.kms.cms import open_enveloped
        from nitrotls.kms.policy import build_key_policy
        from nitrotls.nsm import SimulatedNSM, measure_image

        for name in ("generator", "main"):
            (home / f"{name}.img").write_text(f"bench image {name}\n")
        generator = SimulatedNSM(home / "generator.img")
        main_enclave = SimulatedNSM(home / "main.img")
        server, url = start_server(home)
        try:
            policy = build_key_policy(
                [measure_image(home / "generator.img")],
                [measure_image(home / "main.img")],
                [ADMIN[2]],
                ENCLAVE[2],
            )
            key = client(url, ADMIN).create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
            enclave = client(url, ENCLAVE)
            private, document = recipients(generator, 1)[0]
            made = enclave.generate_data_key(
                KeyId=key,
                KeySpec="AES_256",
                EncryptionContext=CONTEXT,
                Recipient={
                    "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                    "AttestationDocument": document,
                },
            )
            data_key = open_enveloped(made["CiphertextForRecipient"], private)
            blob = made["CiphertextBlob"]

            prepared = recipients(main_enclave, args.documents)
            documents = [doc for _, doc in prepared]
            check = enclave.decrypt(
                CiphertextBlob=blob,
                EncryptionContext=CONTEXT,
                Recipient={
                    "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                    "AttestationDocument": documents[0],
                },
            )
            assert open_enveloped(check["CiphertextForRecipient"], prepared[0][0]) == data_key

            server_rates, floor_rates, plain_rates, floor_cpu = [], [], [], []
            server_cpu, client_cpu = [], []  # seconds per request
            others = []  # share of the machine other processes used during the Decrypt rounds
            total = args.clients * args.requests
            cores = os.cpu_count() or 1
            pool = ClientPool(args.clients, args.processes, args.client_nice, url, blob, documents)
            try:
                pool.run("decrypt", 5)  # connect and warm up
                pool.run("random", 5)
                for _ in range(args.rounds):
                    before = cpu_seconds(server.pid), machine_busy_seconds()
                    rate, per_request = pool.run("decrypt", args.requests)
                    server_rates.append(rate)
                    client_cpu.append(per_request)
                    server_cpu.append((cpu_seconds(server.pid) - before[0]) / total)
                    ours = (server_cpu[-1] + client_cpu[-1]) * total
                    others.append(
                        (machine_busy_seconds() - before[1] - ours) / (total / rate * cores)
                    )
                    plain_rates.append(pool.run("random", args.requests)[0])
                    floor, per_op = floor_rate(documents, total, len(blob) - 37)
                    floor_rates.append(floor)
                    floor_cpu.append(per_op)
            finally:
                pool.close()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)

    served = statistics.median(server_rates)
    floor = statistics.median(floor_rates)
    plain = statistics.median(plain_rates)
    server_ms = statistics.median(server_cpu) * 1e3
    client_ms = statistics.median(client_cpu) * 1e3
    floor_ms = statistics.median(floor_cpu) * 1e3
    cores = os.cpu_count() or 1
    other_share = max(0.0, statistics.median(others))
    print(
        f"local KMS Decrypt+Recipient, {args.clients} boto3 clients (threads in "
        f"{args.processes} process(es), niceness {args.client_nice}), "
        f"{args.rounds} rounds x {args.clients * args.requests} requests"
    )
    print("  Recipient documents and RSA keys pre-generated: this measures the server")
    print(f"  {'server Decrypt+Recipient':<40} {served:9.0f} req/s  (median)")
    print(f"  {'floor: verify + RSA-OAEP + AES-GCM':<40} {floor:9.0f} op/s   (median, 1 thread)")
    print(f"  {'same clients, GenerateRandom (no crypto)':<40} {plain:9.0f} req/s  (median)")
    print(f"  server / floor = {served / floor:.2f}   (goal >= 0.60)")
    print(
        f"  CPU per request (medians, user+sys): server {server_ms:.2f} ms, clients "
        f"{client_ms:.2f} ms, floor {floor_ms:.2f} ms; cores: {cores}"
    )
    print(
        f"  floor CPU / server CPU = {floor_ms / server_ms:.2f}   "
        "(the ratio the server would reach with a core of its own)"
    )
    # Neither the server (its work holds the interpreter lock) nor the client threads (they
    # share one) can use more than a core; together they cannot use more than the machine.
    bound = min(1 / server_ms, args.processes / client_ms, cores / (server_ms + client_ms)) * 1e3
    print(
        f"  CPU bound here: min(1/server, {args.processes}/clients, {cores}/(server+clients)) = "
        f"{bound:.0f} "
        f"req/s = {bound * floor_ms / 1e3:.2f} x floor"
    )
    print(f"  server / no-crypto request rate = {served / plain:.2f}")
    print(
        f"  other processes used {other_share:.0%} of the machine during the Decrypt rounds "
        "(median; above a few percent, the rates are disturbed)"
    )


if __name__ == "__main__":
    main()
