"""``nitrotls demo``: the whole system on one machine, started stage by stage, then proven.

The host side comes first (local KMS, a CA, the outbound and inbound proxies), then the KMS key
whose policy names the two enclave images, then the generator enclave (which issues or reuses
the bundle), the main enclave behind the inbound proxy, and finally an attested client on the
public address. Enclave processes reach KMS and the CA only through ``enclave forward`` →
``host outbound`` (allow-listed) over the development vsock mapping. Every child is stopped on
the way out, whatever the way out is.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from nitrotls import home
from nitrotls.demo import images, kmskey, pebble, roots
from nitrotls.demo.commands import Commands, nitrotls_command
from nitrotls.demo.errors import DemoStageError
from nitrotls.demo.layout import DemoLayout
from nitrotls.demo.probe import Proof, prove
from nitrotls.demo.procs import Child, Supervisor
from nitrotls.demo.progress import Progress, Stage
from nitrotls.demo.ready import http_answers, listens_tcp, listens_unix, wait_until
from nitrotls.demo.state import DemoState, RunRecord

BUNDLE_NAME = "demo"
DOMAIN = "localhost"
MAIN_CID, MAIN_PORT = 16, 443
_DROP_ENV = ("NITROTLS_ENCLAVE", "NITROTLS_CONFIG", "NITROTLS_VSOCK", "NITROTLS_TEST_PAUSE_AT")


@dataclass(frozen=True)
class DemoOptions:
    """What the user chose; timeouts bound every wait."""

    port: int = 8443
    exit_after_verify: bool = False
    ca: str = "auto"  # auto | pebble | local
    start_timeout: float = 30.0
    issue_timeout: float = 180.0


@dataclass(frozen=True)
class DemoResult:
    """What a successful run proved and where to find it."""

    url: str
    ca_cert: Path
    main_pcrs: dict[int, bytes]
    generator_pcrs: dict[int, bytes]
    layout: DemoLayout
    ca_kind: str
    issued: bool
    seconds: float
    previous: RunRecord | None
    proof: Proof
    kms_key_id: str
    bundle_seq: int | None


@dataclass
class Ports:
    """Free TCP ports on 127.0.0.1, each handed out once."""

    taken: set[int] = field(default_factory=set)

    def next(self) -> int:
        while True:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            if port not in self.taken:
                self.taken.add(port)
                return port


def child_environment() -> dict[str, str]:
    """The children's environment: this one, minus proxies and credentials, plus the dev links."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.lower().endswith("_proxy")
        and not key.startswith("AWS_")
        and key not in _DROP_ENV
    }
    env.update(
        NITROTLS_HOME=str(home.data_dir()),
        NITROTLS_VSOCK="unix",
        PYTHONUNBUFFERED="1",
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="*",
    )
    return env


class Demo:
    """One run. Call :meth:`start` inside ``with Supervisor(...)``; it returns the result."""

    def __init__(
        self,
        options: DemoOptions,
        layout: DemoLayout,
        supervisor: Supervisor,
        progress: Progress,
        console: Console,
    ) -> None:
        self.options = options
        self.layout = layout
        self.sup = supervisor
        self.progress = progress
        self.console = console
        self.commands = Commands(nitrotls_command())
        self.ports = Ports({options.port})
        self.state = DemoState.load(layout.state)
        self.credentials = kmskey.Credentials.fresh()
        self.started = time.monotonic()
        self.pcrs: dict[str, dict[int, bytes]] = {}
        self.kms_port = 0
        self.ca_kind = "local"
        self.pebble: pebble.PebbleSetup | None = None
        self.responder_port = 0
        self.key_id = ""
        self.key_created = False
        self.issued = False
        self.bundle_seq: int | None = None
        self.ca_cert = layout.ca / "ca.pem"
        self.serving: list[Child] = []

    # -- the run ---------------------------------------------------------------------------

    def start(self) -> DemoResult:
        """Bring everything up and prove the public address; raise DemoStageError if not."""
        self.layout.endpoint.unlink(missing_ok=True)
        self._prepare()
        self._local_kms()
        self._ca()
        self._outbound()
        if self.pebble is not None:
            self._acme_responder()
        self._inbound()
        self._kms_key()
        self._generator()
        self._main_enclave()
        proof = self._attested_connection()
        seconds = time.monotonic() - self.started
        previous = self.state.last_run
        record = RunRecord(
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=round(seconds, 3),
            issued=self.issued,
            ca=self.ca_kind,
        )
        self.state = self.state.with_run(record)
        self.state.save(self.layout.state)
        result = DemoResult(
            url=self.url,
            ca_cert=self.ca_cert,
            main_pcrs=self.pcrs["main"],
            generator_pcrs=self.pcrs["generator"],
            layout=self.layout,
            ca_kind=self.ca_kind,
            issued=self.issued,
            seconds=seconds,
            previous=previous,
            proof=proof,
            kms_key_id=self.key_id,
            bundle_seq=self.bundle_seq,
        )
        write_endpoint(result)
        return result

    @property
    def url(self) -> str:
        return f"https://{DOMAIN}:{self.options.port}"

    def watch_serving(self, poll: float = 0.5) -> None:
        """While serving: return never; raise DemoStageError if a serving process ends."""
        while True:
            for child in self.serving:
                if not child.alive():
                    raise DemoStageError("serving", child.exit_reason(), child.tail())
            time.sleep(poll)

    # -- stages ----------------------------------------------------------------------------

    def _prepare(self) -> None:
        with self.progress.stage("prepare") as stage:
            from nitrotls.nsm import dev_root_fingerprint

            dev_root = dev_root_fingerprint()  # made once, here, before any enclave races for it
            for role in images.ROLES:
                self.pcrs[role] = images.write_image(self.layout.image(role), role)
                images.write_pcrs_file(self.layout.pcrs_file(role), self.pcrs[role])
            kmskey.write_server_config(self.layout.etc / "kms.toml", self.layout.kms_data)
            stage.detail = f"images and PCRs under {self.layout.root}"
            stage.note(f"simulated NSM dev root sha256:{dev_root.hex()[:16]}…")

    def _local_kms(self) -> None:
        with self.progress.stage("local KMS") as stage:
            self.kms_port = self.ports.next()
            child = self.sup.spawn(
                "kms",
                self.commands.kms_serve(self.layout.etc / "kms.toml", self.kms_port),
                env=self.credentials.server_env(),
            )
            stage.waiting(f"waiting for {self.kms_url}")
            self._wait(listens_tcp(child, self.kms_port), f"the KMS at {self.kms_url}", [child])
            stage.detail = f"{self.kms_url} (attestation-checking, dev root trusted)"

    @property
    def kms_url(self) -> str:
        return f"http://127.0.0.1:{self.kms_port}"

    def _ca(self) -> None:
        executable = pebble.pebble_path()
        choice = self.options.ca
        if choice == "pebble" and executable is None:
            with self.progress.stage("CA"):
                raise DemoStageError("CA", "--ca pebble, but the 'pebble' tool is not installed")
        if choice == "local" or executable is None:
            with self.progress.stage("CA") as stage:
                from nitrotls.ca import LocalCA

                LocalCA()  # the root, made here once; the generator loads it
                self.ca_kind = "local"
                stage.detail = "the local dev CA (root under the data directory)"
                if choice == "auto":
                    stage.note("Pebble is not installed: using the local dev CA instead")
            return
        with self.progress.stage("CA (Pebble)") as stage:
            self.ca_kind = "pebble"
            self.responder_port = self.ports.next()
            setup = pebble.prepare(
                self.layout.ca / "pebble",
                executable,
                acme_port=self.ports.next(),
                management_port=self.ports.next(),
                http_port=self.responder_port,
                tls_port=self.ports.next(),
            )
            child = self.sup.spawn("pebble", setup.argv, env=pebble.ENV)
            stage.waiting(f"waiting for {setup.directory_url}")
            check = http_answers(setup.directory_url, verify=setup.ssl_context(), status=200)
            self._wait(check, f"Pebble's directory {setup.directory_url}", [child])
            pebble.save_roots(self.layout.ca / "pebble", pebble.fetch_roots(setup))
            self.pebble = setup
            stage.detail = f"ACME at {setup.directory_url}"

    def _outbound(self) -> None:
        with self.progress.stage("host outbound proxy") as stage:
            allowed = [f"127.0.0.1:{self.kms_port}"]
            if self.pebble is not None:
                allowed.append(f"127.0.0.1:{self.pebble.acme_port}")
            allow = self.layout.etc / "allow.toml"
            write_allowlist(allow, allowed)
            child = self.sup.spawn("host-outbound", self.commands.outbound(allow))
            path = vsock_path(3, 8000)
            stage.waiting("waiting for vsock://3:8000")
            self._wait(listens_unix(child, path), "the outbound proxy on vsock://3:8000", [child])
            stage.detail = f"vsock://3:8000 → only {', '.join(allowed)}"
            self.serving.append(child)

    def _acme_responder(self) -> None:
        with self.progress.stage("host ACME responder") as stage:
            child = self.sup.spawn(
                "host-acme-responder",
                self.commands.acme_responder(self.layout.store_spec, self.responder_port),
            )
            port = self.responder_port
            self._wait(listens_tcp(child, port), f"the ACME responder on :{port}", [child])
            stage.detail = f"HTTP-01 tokens from the store on 127.0.0.1:{self.responder_port}"

    def _inbound(self) -> None:
        with self.progress.stage("host inbound proxy") as stage:
            port = self.options.port
            child = self.sup.spawn("host-inbound", self.commands.inbound(port))
            stage.waiting(f"waiting for 127.0.0.1:{port}")
            self._wait(listens_tcp(child, port), f"the inbound proxy on :{port}", [child])
            stage.detail = f"tcp://127.0.0.1:{port} → vsock://{MAIN_CID}:{MAIN_PORT} (bytes only)"
            self.serving.append(child)

    def _kms_key(self) -> None:
        with self.progress.stage("KMS key") as stage:
            policy = kmskey.demo_policy(self.pcrs["generator"], self.pcrs["main"])
            result = kmskey.ensure_key(
                self.kms_url, self.credentials, policy, self.state.kms_key_id
            )
            self.key_id = result.key_id
            self.key_created = result.created
            self.state = replace(self.state, kms_key_id=result.key_id)
            self.state.save(self.layout.state)
            how = "created" if result.created else "reused"
            if result.policy_updated:
                how += ", policy updated"
            stage.detail = f"{result.key_id} ({how})"
            stage.note("policy: generator PCRs may GenerateDataKey, main PCRs may Decrypt")

    def _generator(self) -> None:
        with self.progress.stage("generator enclave") as stage:
            kms_forward = self.ports.next()
            forwarders = [
                self._forwarder("generator-forward-kms", kms_forward, f"127.0.0.1:{self.kms_port}")
            ]
            ca, ca_bundle = "local", None
            if self.pebble is not None:
                acme_forward = self.ports.next()
                destination = f"127.0.0.1:{self.pebble.acme_port}"
                forwarders.append(
                    self._forwarder("generator-forward-acme", acme_forward, destination)
                )
                ca = f"acme:https://127.0.0.1:{acme_forward}/dir"
                ca_bundle = self.pebble.tls_ca
            issued_with = f"{self.ca_kind}:{self.pcrs['generator'][0].hex()}"
            force = self.key_created or self.state.issued_with != issued_with
            argv = self.commands.generator(
                self.layout.image("generator"),
                name=BUNDLE_NAME,
                domain=DOMAIN,
                ca=ca,
                ca_bundle=ca_bundle,
                kms_endpoint=f"http://127.0.0.1:{kms_forward}",
                kms_key_id=self.key_id,
                store=self.layout.store_spec,
                main_pcrs=self.layout.pcrs_file("main"),
                force=force,
            )
            for child in forwarders:
                self._wait(listens_tcp(child, _port_of(child)), child.name, [child])
            generator = self.sup.spawn("generator", argv, env=self.credentials.enclave_env(),
                                       keep_stdout=True)  # fmt: skip
            stage.waiting("issuing or checking the bundle (key → seal → CSR → CA → bind → publish)")
            status = self.sup.wait_exit(generator, self.options.issue_timeout)
            if status is None:
                raise DemoStageError(
                    stage.title,
                    f"the generator did not finish within {self.options.issue_timeout:g} s",
                    generator.tail(),
                )
            if status != 0:
                raise DemoStageError(stage.title, generator.exit_reason(), generator.tail())
            outcome = _outcome(generator)
            self.issued = bool(outcome.get("issued"))
            seq = outcome.get("seq")
            self.bundle_seq = seq if isinstance(seq, int) else None
            self.sup.stop(forwarders)
            if self.issued:
                self.state = replace(self.state, issued_with=issued_with)
                self.state.save(self.layout.state)
            self._publish_ca_root(stage)
            reason = str(outcome.get("reason") or "")
            if self.issued:
                stage.detail = f"issued bundle {BUNDLE_NAME!r} seq {self.bundle_seq}"
            else:
                stage.detail = f"reused bundle {BUNDLE_NAME!r} seq {self.bundle_seq}"
                if reason:
                    stage.note(reason)

    def _publish_ca_root(self, stage: Stage) -> None:
        from nitrotls.bundle import decode
        from nitrotls.store import open_store

        with open_store(self.layout.store_spec) as store:
            latest = store.latest(BUNDLE_NAME)
        if latest is None:
            raise DemoStageError(stage.title, "the generator finished but the store has no bundle")
        bundle = decode(latest.data)
        if self.bundle_seq is None:
            self.bundle_seq = bundle.seq
        candidates = [home.data_dir() / "ca" / "root.pem"]
        candidates += sorted((self.layout.ca / "pebble" / "roots").glob("*.pem"))
        root = roots.issuing_root(bundle.chain, candidates)
        if root is None:
            raise DemoStageError(
                stage.title,
                "the bundle's chain leads to no CA root this demo knows; delete "
                f"{self.layout.root} to start over",
            )
        roots.publish_root(root, self.ca_cert)

    def _main_enclave(self) -> None:
        with self.progress.stage("upstream web app") as stage:
            app_port = self.ports.next()
            app = self.sup.spawn("webapp", self.commands.webapp(app_port))
            self._wait(listens_tcp(app, app_port), "the web app", [app])
            stage.detail = f"http://127.0.0.1:{app_port} (inside the main enclave)"
            self.serving.append(app)
        with self.progress.stage("main enclave") as stage:
            kms_forward = self.ports.next()
            forwarder = self._forwarder(
                "main-forward-kms", kms_forward, f"127.0.0.1:{self.kms_port}"
            )
            self._wait(listens_tcp(forwarder, kms_forward), forwarder.name, [forwarder])
            argv = self.commands.serve(
                self.layout.image("main"),
                name=BUNDLE_NAME,
                store=self.layout.store_spec,
                generator_pcrs=self.layout.pcrs_file("generator"),
                kms_endpoint=f"http://127.0.0.1:{kms_forward}",
                upstream_port=app_port,
            )
            main = self.sup.spawn("main", argv, env=self.credentials.enclave_env())
            stage.waiting("verifying the bundle, Decrypt via KMS with its attestation, loading TLS")
            path = vsock_path(MAIN_CID, MAIN_PORT)
            what = f"TLS on vsock://{MAIN_CID}:{MAIN_PORT}"
            self._wait(listens_unix(main, path), what, [main, forwarder])
            stage.detail = f"nitrotls serve on vsock://{MAIN_CID}:{MAIN_PORT} → the web app"
            self.serving += [forwarder, main]

    def _attested_connection(self) -> Proof:
        with self.progress.stage("attested connection") as stage:
            stage.waiting(f"connecting to {self.url}")
            proof = prove(self.url, self.pcrs["main"], self.ca_cert, timeout=15.0)
            stage.detail = f"{self.url}: enclave proven, upstream answered"
            return proof

    # -- helpers ---------------------------------------------------------------------------

    def _forwarder(self, name: str, port: int, destination: str) -> Child:
        return self.sup.spawn(name, self.commands.forward(port, destination))

    def _wait(self, check: Callable[[], bool], what: str, watch: list[Child]) -> None:
        wait_until(check, what=what, timeout=self.options.start_timeout, watch=watch)


def _port_of(child: Child) -> int:
    listen = child.argv[child.argv.index("--listen") + 1]
    return int(listen.rpartition(":")[2])


def _outcome(child: Child) -> dict[str, object]:
    """The generator's ``--log-json`` outcome (stdout); empty when it printed none."""
    if child.stdout is None:
        return {}
    try:
        value = json.loads(child.stdout.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def vsock_path(cid: int, port: int) -> Path:
    """The development socket behind ``vsock://cid:port`` (the children use the same mapping)."""
    from nitrotls.transport import dev_socket_path

    return dev_socket_path(cid, port)


def write_allowlist(path: Path, destinations: list[str]) -> None:
    """The outbound proxy's allow list: exactly these ``host:port`` pairs."""
    from nitrotls.nsm import write_atomic

    lines = ["# Written by `nitrotls demo`: the only places the enclaves may reach.\n"]
    for destination in destinations:
        host, _, port = destination.rpartition(":")
        lines.append(f'\n[[allow]]\naddress = "{host}"\nport = {int(port)}\n')
    write_atomic(path, "".join(lines).encode(), mode=0o644)


def write_endpoint(result: DemoResult) -> Path:
    """``demo/endpoint.json`` (atomic): where the demo serves and how to check it."""
    from nitrotls.nsm import write_atomic

    layout = result.layout
    data = {
        "url": result.url,
        "ca_cert": str(result.ca_cert),
        "main_pcrs": str(layout.pcrs_file("main")),
        "generator_pcrs": str(layout.pcrs_file("generator")),
        "store": layout.store_spec,
        "bundle_name": BUNDLE_NAME,
    }
    write_atomic(layout.endpoint, (json.dumps(data, indent=2) + "\n").encode(), mode=0o644)
    return layout.endpoint
