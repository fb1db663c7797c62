"""The demo's building parts, each on its own: images, configs, state, roots, processes, signals."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from nitrotls.demo import images, kmskey, roots
from nitrotls.demo.errors import DemoError, DemoInterruptedError, DemoStageError
from nitrotls.demo.files import write_allowlist
from nitrotls.demo.layout import DemoLayout
from nitrotls.demo.procs import MARKER_ENV, Supervisor, marked_processes, stop_leftovers
from nitrotls.demo.progress import Progress
from nitrotls.demo.ready import NotReadyError, listens_tcp, wait_until
from nitrotls.demo.run import InterruptGuard, demo_lock
from nitrotls.demo.state import DemoState, RunRecord
from nitrotls.transport import Destination, load_allowlist

from certs import make_ca, make_leaf


@pytest.fixture
def layout(nitrotls_home: Path) -> DemoLayout:
    return DemoLayout(nitrotls_home / "demo").create()


@pytest.fixture
def supervisor(layout: DemoLayout) -> Iterator[Supervisor]:
    sup = Supervisor(layout, dict(os.environ))
    yield sup
    sup.stop_all(grace=1.0)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- images -----------------------------------------------------------------------------------


def test_images_are_reproducible_and_distinct(tmp_path: Path) -> None:
    generator = images.write_image(tmp_path / "g", "generator")
    main = images.write_image(tmp_path / "m", "main")
    assert images.write_image(tmp_path / "g", "generator") == generator
    assert generator[0] != main[0] and generator[2] != main[2]
    assert generator[1] == main[1]  # the same "boot section", as with one nitro-cli release


def test_image_is_restored_after_tampering(tmp_path: Path) -> None:
    directory = tmp_path / "g"
    expected = images.write_image(directory, "generator")
    (directory / "extra").write_text("not part of the image")
    (directory / "cmd").write_text("something else\n")
    (directory / "README").chmod(0o600)
    assert images.write_image(directory, "generator") == expected
    assert not (directory / "extra").exists()


def test_pcrs_file_round_trips(tmp_path: Path) -> None:
    from nitrotls.attestation import load_pcrs_file

    pcrs = images.write_image(tmp_path / "m", "main")
    images.write_pcrs_file(tmp_path / "main.json", pcrs)
    assert load_pcrs_file(tmp_path / "main.json") == pcrs


# -- generated configuration ------------------------------------------------------------------


def test_allowlist_holds_exactly_the_destinations(tmp_path: Path) -> None:
    path = tmp_path / "allow.toml"
    write_allowlist(path, ["127.0.0.1:7800", "127.0.0.1:14000"])
    allow = load_allowlist(path)
    assert len(allow) == 2
    assert allow.permits(Destination.parse("127.0.0.1:7800"))
    assert not allow.permits(Destination.parse("127.0.0.1:7801"))
    assert not allow.permits(Destination.parse("169.254.169.254:80"))


def test_kms_config_names_both_principals_and_holds_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nitrotls.kms.local import load_config
    from nitrotls.kms.local.errors import ConfigError

    path = tmp_path / "kms.toml"
    credentials = kmskey.Credentials.fresh()
    kmskey.write_server_config(path, tmp_path / "kms")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert credentials.admin_secret not in text and credentials.enclave_secret not in text
    with pytest.raises(ConfigError):
        load_config(path)  # the secrets come only from the environment
    for name, value in credentials.server_env().items():
        monkeypatch.setenv(name, value)
    config = load_config(path)
    principals = {c.access_key: c.principal for c in config.credentials}
    assert principals == {
        kmskey.ADMIN_ACCESS_KEY: kmskey.ADMIN_ARN,
        kmskey.ENCLAVE_ACCESS_KEY: kmskey.ENCLAVE_ARN,
    }
    assert config.trust_dev_root and config.data_dir == tmp_path / "kms"
    assert kmskey.Credentials.fresh() != credentials


def test_policy_gives_each_image_only_its_operation(tmp_path: Path) -> None:
    generator = images.write_image(tmp_path / "g", "generator")
    main = images.write_image(tmp_path / "m", "main")
    policy = kmskey.demo_policy(generator, main)
    allows = {
        s["Sid"]: s for s in policy["Statement"] if s["Effect"] == "Allow" and "Condition" in s
    }
    by_action = {s["Action"] if isinstance(s["Action"], str) else s["Action"][0]: s
                 for s in allows.values()}  # fmt: skip
    generate = json.dumps(by_action["kms:GenerateDataKey"])
    decrypt = json.dumps(by_action["kms:Decrypt"])
    assert generator[0].hex() in generate and main[0].hex() not in generate
    assert main[0].hex() in decrypt and generator[0].hex() not in decrypt


# -- state ------------------------------------------------------------------------------------


def test_state_survives_a_round_trip_and_ignores_damage(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert DemoState.load(path) == DemoState()
    state = DemoState(kms_key_id="k", issued_with="local:ab")
    for n in range(12):
        state = state.with_run(RunRecord(f"t{n}", float(n), n == 0, "local"))
    state.save(path)
    loaded = DemoState.load(path)
    assert loaded.kms_key_id == "k" and loaded.issued_with == "local:ab"
    assert len(loaded.runs) == 10 and loaded.last_run == RunRecord("t11", 11.0, False, "local")
    path.write_text('{"kms_key_id": 5, "runs": "x"')
    assert DemoState.load(path) == DemoState()
    path.write_text('{"kms_key_id": 5}')
    assert DemoState.load(path) == DemoState()


# -- which root a chain leads to --------------------------------------------------------------


def test_issuing_root_is_the_one_that_signed_the_chain(tmp_path: Path) -> None:
    right, wrong = make_ca("right CA"), make_ca("wrong CA")
    leaf = make_leaf(right)
    right_path, _ = right.write(tmp_path, "right")
    wrong_path, _ = wrong.write(tmp_path, "wrong")
    (tmp_path / "junk.pem").write_text("not a certificate")
    candidates = [tmp_path / "junk.pem", wrong_path, right_path]
    assert roots.issuing_root((leaf.der,), candidates) == right.cert
    assert roots.issuing_root((leaf.der, right.der), candidates) == right.cert  # root included
    assert roots.issuing_root((leaf.der,), [wrong_path]) is None
    out = roots.publish_root(right.cert, tmp_path / "ca.pem")
    assert out.read_bytes() == right.pem


# -- processes --------------------------------------------------------------------------------


def test_stop_all_terminates_then_kills(supervisor: Supervisor, layout: DemoLayout) -> None:
    polite = supervisor.spawn("polite", ["sleep", "60"])
    stubborn = supervisor.spawn(
        "stubborn",
        python("""
            import signal, sys, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ready", flush=True)
            time.sleep(60)
        """),
    )
    wait_until(lambda: "ready" in stubborn.tail(), what="ready", timeout=10, watch=[stubborn])
    recorded = json.loads(layout.children.read_text())
    assert [entry["pid"] for entry in recorded] == [polite.pid, stubborn.pid]
    assert set(marked_processes(layout.root)) >= {polite.pid, stubborn.pid}
    assert supervisor.stop_all(grace=0.5) == ["stubborn"]
    assert polite.process.returncode == -signal.SIGTERM
    assert stubborn.process.returncode == -signal.SIGKILL


def test_children_get_their_own_session(supervisor: Supervisor) -> None:
    child = supervisor.spawn("sleeper", ["sleep", "60"])
    assert os.getpgid(child.pid) == child.pid != os.getpgid(0)


def test_leftovers_of_a_killed_run_are_stopped(layout: DemoLayout) -> None:
    orphan = subprocess.Popen(
        ["sleep", "60"], env={**os.environ, MARKER_ENV: str(layout.root)}, start_new_session=True
    )
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert stop_leftovers(layout, grace=2.0) == 1
        assert orphan.wait(timeout=5) == -signal.SIGTERM
        assert stranger.poll() is None  # not ours: untouched
    finally:
        for process in (orphan, stranger):
            process.kill()
            process.wait()


# -- readiness --------------------------------------------------------------------------------


def test_wait_reports_a_child_that_exits(supervisor: Supervisor) -> None:
    child = supervisor.spawn("quitter", python("import sys; print('no luck'); sys.exit(3)"))
    with pytest.raises(NotReadyError) as caught:
        wait_until(lambda: False, what="listening", timeout=10, watch=[child])
    assert caught.value.child is child
    assert "exited with status 3" in str(caught.value)
    assert "no luck" in child.tail()


def test_wait_times_out(supervisor: Supervisor) -> None:
    child = supervisor.spawn("sleeper", ["sleep", "60"])
    with pytest.raises(NotReadyError, match=r"sleeper still not listening after 0\.3 s"):
        wait_until(lambda: False, what="listening", timeout=0.3, watch=[child])
    assert child.alive()


def test_listening_counts_only_the_childs_own_socket(supervisor: Supervisor) -> None:
    port = free_port()
    sleeper = supervisor.spawn("sleeper", ["sleep", "60"])
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        assert not listens_tcp(sleeper, port)()  # someone listens, but not the child
    server = supervisor.spawn(
        "server",
        python(f"""
            import socket, time
            s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen(); time.sleep(60)
        """),
    )
    wait_until(listens_tcp(server, port), what="listening", timeout=10, watch=[server])


# -- signals and the lock ---------------------------------------------------------------------


def test_interrupt_is_deferred_while_starting_a_child() -> None:
    with InterruptGuard() as guard:
        with pytest.raises(DemoInterruptedError, match="SIGTERM"), guard.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, and must not raise yet
            reached = True
        assert reached
        guard.stopping()
        os.kill(os.getpid(), signal.SIGINT)  # ignored while stopping
        time.sleep(0.05)


def test_interrupt_raises_at_once_otherwise() -> None:
    with InterruptGuard(), pytest.raises(DemoInterruptedError, match="SIGHUP"):
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(1)


def test_one_demo_per_data_directory(layout: DemoLayout) -> None:
    with demo_lock(layout):
        with pytest.raises(DemoError, match="another `nitrotls demo`"), demo_lock(layout):
            pass
        assert layout.lock.read_text().strip() == str(os.getpid())
    with demo_lock(layout):
        pass


# -- progress ---------------------------------------------------------------------------------


def test_a_failing_stage_is_named() -> None:
    buffer = io.StringIO()
    progress = Progress(Console(file=buffer, width=200))
    with progress.stage("fine") as stage:
        stage.detail = "all good"
    with pytest.raises(DemoStageError) as caught, progress.stage("broken"):
        raise ValueError("the widget is missing")
    assert caught.value.stage == "broken"
    assert "ValueError: the widget is missing" in str(caught.value)
    text = buffer.getvalue()
    assert "✓ fine" in text and "all good" in text
    assert "✗ broken" in text and "the widget is missing" in text
    assert set(progress.timings) == {"fine"}


# -- the upstream web app ---------------------------------------------------------------------


def test_webapp_greets_and_stops_on_sigterm(supervisor: Supervisor) -> None:
    port = free_port()
    app = supervisor.spawn(
        "webapp", [sys.executable, "-m", "nitrotls.demo.webapp", "--listen", f"127.0.0.1:{port}"]
    )
    wait_until(listens_tcp(app, port), what="listening", timeout=15, watch=[app])
    response = httpx.get(
        f"http://127.0.0.1:{port}/x", headers={"X-Forwarded-For": "192.0.2.7"}, trust_env=False
    )
    assert response.status_code == 200
    assert response.text.startswith("hello from inside the enclave\n")
    assert "192.0.2.7" in response.text and "path: /x" in response.text
    os.kill(app.pid, signal.SIGTERM)
    assert app.process.wait(timeout=10) == 0
    assert "RuntimeWarning" not in app.tail()
