"""The stand-in enclave protects itself as far as Linux lets a process (enclave/hardening.py).

Attacked from other processes, as a node operator on the same machine would: a process of the
enclave's own user, and a process of the node's user, try to read the enclave's memory, its
environment, its platform secret and its sealed state. Each attempt must be refused, while the
same attempts against an ordinary process of that user succeed (so the tests can fail). The
attackers are plain ``cat`` processes started with ``setpriv`` under the other user's ids.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from enclave.hardening import ensure_user
from tests.support import enclave_support as es

pytestmark = pytest.mark.integration

ENCLAVE_USER = "splitseal-enclave-test"
NODE_USER = "splitseal-node-test"


def _as(user: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    import pwd

    pw = pwd.getpwnam(user)
    return subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *cmd],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def hardened(embedded_chain, embedded_deployment):
    if os.geteuid() != 0:
        pytest.skip("the privilege drop needs the enclave to start as root (CI runs as root)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run the attackers as other users")
    ensure_user(ENCLAVE_USER)
    node = ensure_user(NODE_USER)
    node_group = grp.getgrgid(node.pw_gid).gr_name
    base = Path(tempfile.mkdtemp(prefix="splitseal-hardening-", dir="/tmp"))
    os.chmod(base, 0o711)  # the enclave's user must reach its state dir inside
    snapshot = embedded_chain.snapshot()
    w = es.build_world(embedded_chain, embedded_deployment, base, socket_in_state_dir=True,
                       enclave_args=("--user", ENCLAVE_USER, "--socket-group", node_group))
    try:
        yield w
    finally:
        w.client.close()
        w.process.stop()
        embedded_chain.revert(snapshot)
        shutil.rmtree(base, ignore_errors=True)


def test_the_enclave_runs_as_its_own_user_undumpable_locked_without_core_files(hardened):
    status = hardened.client.status()
    assert status.process["user"] == ENCLAVE_USER
    assert status.process["dumpable"] is False and status.process["core_files"] is False
    assert status.process["memory_locked"] is True
    limits = Path(f"/proc/{hardened.process.pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core
    sock = hardened.socket_path.stat()
    assert oct(sock.st_mode & 0o777) == "0o660" and grp.getgrgid(sock.st_gid).gr_name != "root"


def test_after_the_drop_it_still_serves_a_signed_inference(hardened):
    w = hardened
    run = es.open_request(w, es.sample_inputs(2, seed=5))
    reply = es.infer(w, run)
    es.submit(w, run, reply)
    assert es.requester_opens(w, run, reply).labels == tuple(w.run_full_model(run.x).argmax(axis=1))


def test_a_process_of_the_enclaves_own_user_cannot_read_its_memory(hardened):
    pid = hardened.process.pid
    for what in ("maps", "mem", "environ"):
        attempt = _as(ENCLAVE_USER, "cat", f"/proc/{pid}/{what}")
        assert attempt.returncode != 0 and "Permission denied" in attempt.stderr, (what, attempt)
    # the same user reads an ordinary process of its own: the refusal above is the enclave's doing
    victim = subprocess.Popen(["setpriv", f"--reuid={ENCLAVE_USER}", f"--regid={ENCLAVE_USER}", "--clear-groups",
                               "sleep", "30"])
    try:
        for _ in range(100):  # until setpriv has changed its ids and exec'd sleep
            if _uid(victim.pid) != 0:
                break
            time.sleep(0.02)
        assert _as(ENCLAVE_USER, "cat", f"/proc/{victim.pid}/maps").returncode == 0
    finally:
        victim.kill()
        victim.wait()


def test_the_nodes_user_can_read_neither_memory_nor_secrets_nor_sealed_state(hardened):
    w = hardened
    targets = [f"/proc/{w.process.pid}/environ", f"/proc/{w.process.pid}/maps",
               str(w.base / "platform" / "root_secret"), str(w.base / "platform" / "quoting_key"),
               str(w.state_dir / "sealed" / "identity.sealed"), str(w.state_dir / "sealed" / "manifest.sealed")]
    for target in targets:
        attempt = _as(NODE_USER, "cat", target)
        assert attempt.returncode != 0 and "Permission denied" in attempt.stderr, (target, attempt)
    listing = _as(NODE_USER, "ls", str(w.state_dir))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return -1
