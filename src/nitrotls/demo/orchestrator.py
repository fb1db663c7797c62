"""``nitrotls demo``: the whole system on one machine, started at once, checked stage by stage.

Every long-running process is launched right after ``prepare`` (they start in parallel); then
each stage waits for its own process to be ready, in the order a reader follows the system: the
host side (local KMS, a CA, the outbound and inbound proxies), the KMS key whose policy names
the two enclave images, the generator enclave (issues or reuses the bundle), the main enclave
behind the inbound proxy, and an attested client on the public address. Enclave processes reach
KMS and the CA only through ``enclave forward`` → ``host outbound`` (allow-listed) over the
development vsock mapping. Every child is stopped on the way out, whatever the way out is.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from nitrotls import home
from nitrotls.demo import images, kmskey, pebble, roots
from nitrotls.demo.commands import MAIN_VSOCK, OUTBOUND_VSOCK, Commands, nitrotls_command
from nitrotls.demo.errors import DemoStageError
from nitrotls.demo.files import vsock_path, write_allowlist, write_endpoint
from nitrotls.demo.layout import BUNDLE_NAME, DOMAIN, DemoLayout
from nitrotls.demo.plan import CAPlan, PortPlan, plan_ca
from nitrotls.demo.probe import Proof, prove
from nitrotls.demo.procs import Child, Supervisor
from nitrotls.demo.progress import Progress, Stage
from nitrotls.demo.ready import (
    NotReadyError,
    http_answers,
    listens_tcp,
    listens_unix,
    wait_until,
)
from nitrotls.demo.state import DemoState, RunRecord

MAIN_CID, MAIN_PORT = 16, 443
OUTBOUND_CID, OUTBOUND_PORT = 3, 8000
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
    """One run. :meth:`start` brings everything up and returns what was proven."""

    def __init__(
        self,
        options: DemoOptions,
        layout: DemoLayout,
        supervisor: Supervisor,
        progress: Progress,
    ) -> None:
        self.options = options
        self.layout = layout
        self.sup = supervisor
        self.progress = progress
        self.commands = Commands(nitrotls_command())
        self.ports = PortPlan.choose(options.port)
        self.state = DemoState.load(layout.state)
        self.credentials = kmskey.Credentials.fresh()
        self.started = time.monotonic()
        self.pcrs: dict[str, dict[int, bytes]] = {}
        self.ca = CAPlan("local", False, "", False, "")
        self.pebble: pebble.PebbleSetup | None = None
        self.procs: dict[str, Child] = {}
        self.key_id = ""
        self.issued = False
        self.bundle_seq: int | None = None
        self.ca_cert = layout.ca / "ca.pem"
        self.serving: list[Child] = []

    @property
    def url(self) -> str:
        return f"https://{DOMAIN}:{self.ports.public}"

    @property
    def kms_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.kms}"

    # -- the run ---------------------------------------------------------------------------

    def start(self) -> DemoResult:
        """Bring everything up and prove the public address; raise DemoStageError if not."""
        self.layout.endpoint.unlink(missing_ok=True)
        self._prepare()
        self._local_kms()
        self._ca_stage()
        self._outbound()
        if "host-acme-responder" in self.procs:
            self._acme_responder()
        self._inbound()
        self._kms_key()
        self._generator()
        self._webapp()
        self._main_enclave()
        proof = self._attested_connection()
        return self._finish(proof)

    def watch_serving(self, poll: float = 0.5) -> None:
        """While serving: return never; raise DemoStageError if a serving process ends."""
        while True:
            for child in self.serving:
                if not child.alive():
                    raise DemoStageError("serving", child.exit_reason(), child.tail())
            time.sleep(poll)

    def _finish(self, proof: Proof) -> DemoResult:
        seconds = time.monotonic() - self.started
        previous = self.state.last_run
        record = RunRecord(
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=round(seconds, 3),
            issued=self.issued,
            ca=self.ca.kind,
        )
        self.state = self.state.with_run(record)
        self.state.save(self.layout.state)
        write_endpoint(self.layout, self.url, self.ca_cert)
        return DemoResult(
            url=self.url,
            ca_cert=self.ca_cert,
            main_pcrs=self.pcrs["main"],
            generator_pcrs=self.pcrs["generator"],
            layout=self.layout,
            ca_kind=self.ca.kind,
            issued=self.issued,
            seconds=seconds,
            previous=previous,
            proof=proof,
            kms_key_id=self.key_id,
            bundle_seq=self.bundle_seq,
        )

    # -- prepare and launch ----------------------------------------------------------------

    def _prepare(self) -> None:
        with self.progress.stage("prepare") as stage:
            from nitrotls.nsm import dev_root_fingerprint

            dev_root = dev_root_fingerprint()  # made once, here, before any enclave races for it
            for cid, port in ((OUTBOUND_CID, OUTBOUND_PORT), (MAIN_CID, MAIN_PORT)):
                vsock_path(cid, port)  # a data directory too deep for socket paths fails here
            for role in images.ROLES:
                self.pcrs[role] = images.write_image(self.layout.image(role), role)
                images.write_pcrs_file(self.layout.pcrs_file(role), self.pcrs[role])
            kmskey.write_server_config(self.layout.etc / "kms.toml", self.layout.kms_data)
            self.ca = plan_ca(self._ca_kind(), self.layout, self.state, self.pcrs["generator"][0])
            if self.ca.kind == "local":
                from nitrotls.ca import LocalCA

                LocalCA()  # its root, made here once; the generator loads it
            else:
                self.pebble = self._pebble_setup()
            write_allowlist(self.layout.etc / "allow.toml", self._allowed())
            self._launch()
            stage.detail = f"{len(self.procs)} processes starting; state under {self.layout.root}"
            stage.note(f"simulated NSM dev root sha256:{dev_root.hex()[:16]}…")

    def _ca_kind(self) -> str:
        choice, available = self.options.ca, pebble.pebble_path() is not None
        if choice == "pebble" and not available:
            raise DemoStageError("prepare", "--ca pebble, but the 'pebble' tool is not installed")
        return "pebble" if available and choice != "local" else "local"

    def _pebble_setup(self) -> pebble.PebbleSetup:
        executable = pebble.pebble_path()
        assert executable is not None
        return pebble.prepare(
            self.layout.ca / "pebble",
            executable,
            acme_port=self.ports.acme,
            management_port=self.ports.acme_management,
            http_port=self.ports.responder,
            tls_port=self.ports.acme_tls,
        )

    def _allowed(self) -> list[str]:
        allowed = [f"127.0.0.1:{self.ports.kms}"]
        if self.pebble is not None:
            allowed.append(f"127.0.0.1:{self.ports.acme}")
        return allowed

    def _launch(self) -> None:
        """Start every long-running process now; the stages below wait for each in turn."""
        ports, commands = self.ports, self.commands
        kms = f"127.0.0.1:{ports.kms}"
        self._spawn(
            "kms",
            commands.kms_serve(self.layout.etc / "kms.toml", ports.kms),
            env=self.credentials.server_env(),
        )
        if self.pebble is not None and self.ca.needed:
            self._launch_ca()
        self._spawn("host-outbound", commands.outbound(self.layout.etc / "allow.toml"))
        self._spawn("host-inbound", commands.inbound(ports.public))
        self._spawn("generator-forward-kms", commands.forward(ports.generator_kms, kms))
        self._spawn("webapp", commands.webapp(ports.webapp))
        self._spawn("main-forward-kms", commands.forward(ports.main_kms, kms))

    def _launch_ca(self) -> None:
        assert self.pebble is not None
        ports, commands = self.ports, self.commands
        self._spawn("pebble", self.pebble.argv, env=pebble.ENV)
        responder = commands.acme_responder(self.layout.store_spec, ports.responder)
        self._spawn("host-acme-responder", responder)
        acme = f"127.0.0.1:{ports.acme}"
        self._spawn("generator-forward-acme", commands.forward(ports.generator_acme, acme))

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        child = self.sup.spawn(name, argv, env=env)
        self.procs[name] = child
        return child

    # -- the host --------------------------------------------------------------------------

    def _local_kms(self) -> None:
        with self.progress.stage("local KMS") as stage:
            stage.waiting(f"waiting for {self.kms_url}")
            self._wait_tcp(self.procs["kms"], self.ports.kms)
            self.serving.append(self.procs["kms"])
            stage.detail = f"{self.kms_url} (attestation-checking, dev root trusted)"

    def _ca_stage(self) -> None:
        if self.pebble is None:
            with self.progress.stage("CA") as stage:
                stage.detail = "the local dev CA (root under the data directory)"
                if self.options.ca == "auto":
                    stage.note("Pebble is not installed: the local dev CA signs instead")
            return
        with self.progress.stage("CA (Pebble)") as stage:
            if "pebble" not in self.procs:
                stage.detail = f"not started: {self.ca.reason}"
                return
            self._await_pebble(stage)
            stage.detail = f"ACME at {self.pebble.directory_url}"

    def _await_pebble(self, stage: Stage) -> None:
        assert self.pebble is not None
        url = self.pebble.directory_url
        stage.waiting(f"waiting for {url}")
        check = http_answers(url, verify=self.pebble.ssl_context(), status=200)
        self._wait(check, f"answering at {url}", [self.procs["pebble"]])
        pebble.save_roots(self.layout.ca / "pebble", pebble.fetch_roots(self.pebble))

    def _outbound(self) -> None:
        with self.progress.stage("host outbound proxy") as stage:
            child = self.procs["host-outbound"]
            path = vsock_path(OUTBOUND_CID, OUTBOUND_PORT)
            self._wait(listens_unix(child, path), f"listening on {OUTBOUND_VSOCK}", [child])
            stage.detail = f"{OUTBOUND_VSOCK} → only {', '.join(self._allowed())}"
            self.serving.append(child)

    def _acme_responder(self) -> None:
        with self.progress.stage("host ACME responder") as stage:
            self._wait_tcp(self.procs["host-acme-responder"], self.ports.responder)
            stage.detail = f"HTTP-01 tokens from the store on 127.0.0.1:{self.ports.responder}"

    def _inbound(self) -> None:
        with self.progress.stage("host inbound proxy") as stage:
            child = self.procs["host-inbound"]
            try:
                self._wait_tcp(child, self.ports.public)
            except NotReadyError as error:
                tail = child.tail()
                if "in use" not in tail.lower():
                    raise
                reason = (
                    f"port {self.ports.public} is already in use on 127.0.0.1 "
                    "(choose another with --port N)"
                )
                raise DemoStageError(stage.title, f"{error}: {reason}", tail) from None
            stage.detail = f"tcp://127.0.0.1:{self.ports.public} → {MAIN_VSOCK} (bytes only)"
            self.serving.append(child)

    def _kms_key(self) -> None:
        with self.progress.stage("KMS key") as stage:
            policy = kmskey.demo_policy(self.pcrs["generator"], self.pcrs["main"])
            result = kmskey.ensure_key(
                self.kms_url, self.credentials, policy, self.state.kms_key_id
            )
            self.key_id = result.key_id
            if result.created and not self.ca.force:
                self.ca = replace(self.ca, needed=True, force=True, reason="new KMS key")
            self.state = replace(self.state, kms_key_id=result.key_id)
            self.state.save(self.layout.state)
            how = "created" if result.created else "reused"
            if result.policy_updated:
                how += ", policy updated"
            stage.detail = f"{result.key_id} ({how})"
            stage.note("policy: generator PCRs may GenerateDataKey, main PCRs may Decrypt")

    # -- the enclaves ----------------------------------------------------------------------

    def _generator(self) -> None:
        with self.progress.stage("generator enclave") as stage:
            if self.pebble is not None and self.ca.needed and "pebble" not in self.procs:
                stage.note(f"starting Pebble after all: {self.ca.reason}")
                self._launch_ca()
                self._await_pebble(stage)
                self._wait_tcp(self.procs["host-acme-responder"], self.ports.responder)
            forwarders = [
                self.procs[name]
                for name in ("generator-forward-kms", "generator-forward-acme")
                if name in self.procs
            ]
            for child in forwarders:
                self._wait_tcp(child, _port_of(child))
            generator = self.sup.spawn(
                "generator", self._generator_argv(), env=self.credentials.enclave_env(),
                keep_stdout=True,
            )  # fmt: skip
            stage.waiting("issuing or checking the bundle (key → seal → CSR → CA → bind → publish)")
            self._await_generator(stage, generator)
            self.sup.stop(forwarders)  # the generator enclave's work is done
            self._publish_ca_root(stage)
            if self.issued:
                stage.detail = f"issued bundle {BUNDLE_NAME!r} seq {self.bundle_seq}"
            else:
                stage.detail = f"reused bundle {BUNDLE_NAME!r} seq {self.bundle_seq}"

    def _generator_argv(self) -> list[str]:
        ca, ca_bundle = "local", None
        if self.pebble is not None:
            ca = f"acme:https://127.0.0.1:{self.ports.generator_acme}/dir"
            ca_bundle = self.pebble.tls_ca
        return self.commands.generator(
            self.layout.image("generator"),
            name=BUNDLE_NAME,
            domain=DOMAIN,
            ca=ca,
            ca_bundle=ca_bundle,
            kms_endpoint=f"http://127.0.0.1:{self.ports.generator_kms}",
            kms_key_id=self.key_id,
            store=self.layout.store_spec,
            main_pcrs=self.layout.pcrs_file("main"),
            force=self.ca.force,
        )

    def _await_generator(self, stage: Stage, generator: Child) -> None:
        status = self.sup.wait_exit(generator, self.options.issue_timeout)
        if status is None:
            raise DemoStageError(
                stage.title,
                f"the generator did not finish within {self.options.issue_timeout:g} s",
                generator.tail(),
            )
        if status != 0:
            tail = generator.tail()
            last = tail.strip().splitlines()[-1] if tail.strip() else ""
            raise DemoStageError(stage.title, f"{generator.exit_reason()}: {last}", tail)
        outcome = _outcome(generator)
        self.issued = bool(outcome.get("issued"))
        seq = outcome.get("seq")
        self.bundle_seq = seq if isinstance(seq, int) else None
        if self.issued:
            self.state = replace(self.state, issued_with=self.ca.issued_with)
            self.state.save(self.layout.state)
        elif outcome.get("reason"):
            stage.note(f"not due: {outcome['reason']}")

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

    def _webapp(self) -> None:
        with self.progress.stage("upstream web app") as stage:
            app = self.procs["webapp"]
            self._wait_tcp(app, self.ports.webapp)
            stage.detail = f"http://127.0.0.1:{self.ports.webapp} (inside the main enclave)"
            self.serving.append(app)

    def _main_enclave(self) -> None:
        with self.progress.stage("main enclave") as stage:
            forwarder = self.procs["main-forward-kms"]
            self._wait_tcp(forwarder, self.ports.main_kms)
            argv = self.commands.serve(
                self.layout.image("main"),
                name=BUNDLE_NAME,
                store=self.layout.store_spec,
                generator_pcrs=self.layout.pcrs_file("generator"),
                ca_cert=self.ca_cert,
                kms_endpoint=f"http://127.0.0.1:{self.ports.main_kms}",
                upstream_port=self.ports.webapp,
                health_port=self.ports.health,
            )
            main = self._spawn("main", argv, env=self.credentials.enclave_env())
            stage.waiting("verifying the bundle, Decrypt via KMS with its attestation, loading TLS")
            ready = f"http://127.0.0.1:{self.ports.health}/readyz"
            self._wait(http_answers(ready, status=200), f"ready at {ready}", [main, forwarder])
            path = vsock_path(MAIN_CID, MAIN_PORT)
            self._wait(listens_unix(main, path), f"serving TLS on {MAIN_VSOCK}", [main])
            stage.detail = f"nitrotls serve on {MAIN_VSOCK} → the web app"
            stage.note(f"health and metrics: http://127.0.0.1:{self.ports.health}/metrics")
            self.serving += [forwarder, main]

    def _attested_connection(self) -> Proof:
        with self.progress.stage("attested connection") as stage:
            stage.waiting(f"connecting to {self.url}")
            proof = prove(self.url, self.pcrs["main"], self.ca_cert, timeout=15.0)
            stage.detail = f"{self.url}: enclave proven, upstream answered"
            return proof

    # -- helpers ---------------------------------------------------------------------------

    def _wait(self, check: Callable[[], bool], what: str, watch: list[Child]) -> None:
        wait_until(check, what=what, timeout=self.options.start_timeout, watch=watch)

    def _wait_tcp(self, child: Child, port: int) -> None:
        """Until ``child`` listens on 127.0.0.1:``port`` (or ends, or time runs out)."""
        self._wait(listens_tcp(child, port), f"listening on 127.0.0.1:{port}", [child])


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
