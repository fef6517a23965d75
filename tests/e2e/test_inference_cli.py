"""Transaction-triggered inference from the command line, as a user runs it, with real processes.

On a real anvil node: ``deploy`` → ``enclave serve`` (its own process) → ``enclave attest`` →
``model split`` → ``model provision --register --allow-measurement`` → ``node run --authorize``
(its own process) → ``infer --wait --json`` (the label equals the plaintext model's argmax) → a
wrong-shape input ends FAILED with a reason code and a non-zero exit while the node goes on →
``audit request`` verifies → ``audit model --html`` writes the report → SIGTERM stops the node
with status 0 → a request sent while the node is down is served once after a restart, and nothing
earlier is served again → SIGTERM right after the node says it serves still exits 0. The
embedded chain's commands (``infer``, ``audit``, ``node run``) refuse with a one-line error that
says what to do instead.

Every command runs in a subprocess with its own ``SPLITSEAL_HOME`` and ``--config`` under the
test's temporary directory. The anvil node is started by the test (not by ``splitseal chain
up``, which records itself in the repository's ``var/chain`` whatever ``SPLITSEAL_HOME`` says) with
a chain id of its own, so that the deployment record ``deploy`` writes cannot collide with another
test's anvil (the record is keyed by chain id).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from splitseal.config import PROJECT_ROOT
from splitseal.protocol import FailureCode
from tests.support import enclave_support as es

SPLITSEAL = [sys.executable, "-m", "orchestrator.cli"]
MODEL_NAME = "cli-inference-canary"
REFERENCE_MODEL = PROJECT_ROOT / "models" / "digits_classifier.onnx"
REFERENCE_RULE = PROJECT_ROOT / "rules" / "digits_classifier.toml"


def _clean_env(home: Path) -> dict[str, str]:
    """The user's environment without any SPLITSEAL_* setting, pointed at a private home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSEAL_")}
    env["SPLITSEAL_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Cli:
    """Runs ``splitseal --config CONFIG ...`` in subprocesses; remembers background processes."""

    def __init__(self, home: Path, config: Path) -> None:
        self.env = _clean_env(home)
        self.config = config
        self.background: list[subprocess.Popen[Any]] = []

    def argv(self, *args: str) -> list[str]:
        return [*SPLITSEAL, "--config", str(self.config), *args]

    def run(self, *args: str, expect: int | None = 0, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if expect is not None:
            assert proc.returncode == expect, (f"splitseal {' '.join(args)} exited {proc.returncode}, "
                                               f"expected {expect}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, log_path: Path, *args: str) -> subprocess.Popen[Any]:
        """A long-running command in its own process group, output to ``log_path``."""
        log = open(log_path, "ab")
        proc = subprocess.Popen(self.argv(*args), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.background.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)


def _wait_for(what: str, ready, proc: subprocess.Popen[Any], log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before it was ready:\n"
                                 f"{log_path.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready after {timeout} s:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.05)


def _start_anvil(log_path: Path) -> tuple[subprocess.Popen[Any], str, int]:
    """anvil on loopback, a free port and a chain id nobody else uses.

    The arguments are ``splitseal.chain.anvil.AnvilNode.start``'s except that pruning keeps the 64
    latest states: with a bare ``--prune-history`` anvil keeps none but the head's, and an
    ``eth_call`` at "latest" that races with a newly mined block fails with BlockOutOfRangeError
    (about one call in four while another account's transactions are being mined).
    """
    from splitseal.chain import AnvilNode, anvil_binary, free_port

    port, chain_id = free_port(), random.randint(10_000_000, 2_000_000_000)
    log = open(log_path, "ab")
    proc = subprocess.Popen([str(anvil_binary()), "--host", "127.0.0.1", "--port", str(port), "--chain-id",
                             str(chain_id), "--prune-history", "64", "--silent"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    node = AnvilNode(pid=proc.pid, port=port)
    _wait_for("anvil", node.alive, proc, log_path, timeout=20)
    return proc, node.http_url, chain_id


def _model(tmp: Path) -> tuple[Path, Path, ort.InferenceSession, tuple[int, ...]]:
    """The committed reference model when present, else the canary model of the enclave tests.

    Returns the model file, its rule, a plaintext session and one sample's shape (no batch axis).
    """
    if REFERENCE_MODEL.exists() and REFERENCE_RULE.exists():
        session = ort.InferenceSession(str(REFERENCE_MODEL), providers=["CPUExecutionProvider"])
        shape = tuple(int(d) for d in session.get_inputs()[0].shape[1:])
        return REFERENCE_MODEL, REFERENCE_RULE, session, shape
    model_path, rule_path = tmp / "canary.onnx", tmp / "canary.toml"
    onnx.save(es.canary_model(), str(model_path))
    rule_path.write_bytes(es.RULE)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return model_path, rule_path, session, (es.IN_FEATURES,)


def _plain_scores(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """The whole model's output for one sample, in one process: what the split must reproduce."""
    return session.run(None, {session.get_inputs()[0].name: x[None, ...].astype(np.float32)})[0][0]


def _plain_label(session: ort.InferenceSession, x: np.ndarray) -> int:
    return int(np.argmax(_plain_scores(session, x)))


def _sample(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _banners(node_log: Path) -> int:
    """How many times a node said it serves (and so has its stop handlers installed)."""
    return node_log.read_text(errors="replace").count("SIGTERM stops it")


def _stopped_lines(node_log: Path) -> int:
    """Clean stops: the loop ended (node log) and the command finished (its last line)."""
    text = node_log.read_text(errors="replace")
    loops = text.count("chain_node.inference_node: node stopped")
    commands = sum(1 for line in text.splitlines() if line.startswith("node 0x") and line.endswith(" stopped"))
    assert loops == commands, text
    return loops


def _events(audit: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in audit["events"] if e["name"] == name]


# --- the embedded chain: clear errors, no anvil ------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("command, says", [
    (("infer", "--chain", "embedded", "--model", "m", "--input", "{x}"), "--chain anvil"),
    (("infer", "--model", "m", "--input", "{x}", "--wait"), "splitseal demo"),
    (("audit", "request", "1"), "--chain anvil"),
    (("audit", "model", "m", "--chain", "embedded"), "splitseal demo"),
    (("node", "run", "--chain", "embedded", "--backbone", "{x}"), "--chain anvil"),
])
def test_embedded_chain_commands_say_what_to_do_instead(tmp_path, command, says):
    home = tmp_path / "home"
    config = tmp_path / "splitseal.toml"
    config.write_text("[chain]\nurl = \"embedded\"\n")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros(4, np.float32))
    cli = Cli(home, config)
    proc = cli.run(*(a.replace("{x}", str(x)) for a in command), expect=2)
    message = proc.stderr.strip()
    assert message.startswith("error: ") and message.count("\n") == 0, message  # one line, no traceback
    assert "embedded chain" in message and says in message, message
    assert not home.exists() or not any(home.rglob("*.sqlite3"))  # nothing was started


# --- anvil: the whole flow ---------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.e2e
def test_inference_from_the_cli_on_anvil(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "splitseal.toml"
    # short socket path (AF_UNIX paths are limited to 107 bytes); quick retries for the bad input
    config.write_text(f'[enclave]\nsocket_path = "{tmp_path / "e.sock"}"\n'
                      "[node]\nretry_backoff = 0.05\n")
    cli = Cli(home, config)
    record: Path | None = None
    anvil: subprocess.Popen[Any] | None = None
    try:
        anvil, url, chain_id = _start_anvil(tmp_path / "anvil.log")
        record = home / "deployments" / f"{chain_id}.json"  # deployments live under SPLITSEAL_HOME
        chain = ("--chain", url)

        deployed = json.loads(cli.run("deploy", *chain, "--json").stdout)
        assert deployed["chainId"] == chain_id and record.exists()

        enclave_log = tmp_path / "enclave.log"
        enclave = cli.start(enclave_log, "enclave", "serve")
        _wait_for("enclave serve", (tmp_path / "e.sock").exists, enclave, enclave_log)
        attested = json.loads(cli.run("enclave", "attest", *chain, "--json").stdout)

        model_path, rule_path, plain, sample_shape = _model(tmp_path)
        split_dir = tmp_path / "split"
        cli.run("model", "split", str(model_path), "--rule", str(rule_path), "--out", str(split_dir))
        provisioned = json.loads(cli.run("model", "provision", str(split_dir), *chain, "--model-id", MODEL_NAME,
                                         "--register", "--allow-measurement", "--json").stdout)
        assert provisioned["serving"] and provisioned["enclave"] == attested["enclave"]

        # the node holds only the public backbone, apart from the owner's split directory
        node_dir = tmp_path / "node-backbone"
        node_dir.mkdir()
        (node_dir / "backbone.onnx").write_bytes((split_dir / "backbone.onnx").read_bytes())
        node_args = ("node", "run", *chain, "--backbone", str(node_dir / "backbone.onnx"))
        node_log = tmp_path / "node.log"
        node = cli.start(node_log, "-v", *node_args, "--authorize")
        _wait_for("node run", lambda: _banners(node_log) == 1, node, node_log)

        # 1. a good request: the label is the plaintext model's
        x = _sample(sample_shape, seed=1)
        np.save(tmp_path / "x.npy", x)
        first = json.loads(cli.run("infer", *chain, "--model", MODEL_NAME, "--input", str(tmp_path / "x.npy"),
                                   "--wait", "--json", "--timeout", "60").stdout)
        assert first["status"] == "COMPLETED", first
        assert first["label"] == _plain_label(plain, x)
        if first["scores"] is not None:  # the canary's rule releases label and scores
            np.testing.assert_allclose(first["scores"], _plain_scores(plain, x), atol=1e-5)
        assert first["enclave"] == attested["enclave"]
        assert set(first["transactions"]) >= {"request", "transfer", "result"}

        # 2. a wrong shape: FAILED on-chain with a reason code, non-zero exit, the node goes on
        bad = np.zeros((sample_shape[0] + 3, *sample_shape[1:]), np.float32)
        np.save(tmp_path / "bad.npy", bad)
        failed_proc = cli.run("infer", *chain, "--model", MODEL_NAME, "--input", str(tmp_path / "bad.npy"),
                              "--wait", "--timeout", "60", expect=None)
        assert failed_proc.returncode == 1, failed_proc.stdout + failed_proc.stderr  # served failure, not CLI error
        headline, failure_line = failed_proc.stdout.splitlines()[:2]
        assert headline == f"request {first['requestId'] + 1}: FAILED", failed_proc.stdout
        assert failure_line.strip().startswith("failure: SHAPE_MISMATCH:") and "shape" in failure_line
        assert "prediction" not in failed_proc.stdout and "tx failure:" in failed_proc.stdout
        failed = {"requestId": first["requestId"] + 1}
        # given the public backbone, the CLI refuses the wrong shape before any money is spent
        refused = cli.run("infer", *chain, "--model", MODEL_NAME, "--input", str(tmp_path / "bad.npy"),
                          "--backbone", str(node_dir), "--wait", expect=None)
        assert refused.returncode not in (0, 1) and "nothing was sent" in refused.stderr, refused.stderr

        x2 = _sample(sample_shape, seed=2)
        np.save(tmp_path / "x2.npy", x2)
        second = json.loads(cli.run("infer", *chain, "--model", MODEL_NAME, "--input", str(tmp_path / "x2.npy"),
                                    "--wait", "--json", "--timeout", "60").stdout)
        assert second["status"] == "COMPLETED" and second["label"] == _plain_label(plain, x2)
        assert node.poll() is None, node_log.read_text()
        assert "stage=completed backbone_ms=" in node_log.read_text(), node_log.read_text()[-2000:]

        # 3. the audit trail
        audit = json.loads(cli.run("audit", "request", str(first["requestId"]), *chain, "--json").stdout)
        assert audit["status"] == "COMPLETED" and audit["verified"], [c for c in audit["checks"] if not c["ok"]]
        # the node's one-transaction delivery: backbone output and transfer are its calldata
        assert {"InferenceRequested", "ResultSubmitted"} <= {e["name"] for e in audit["events"]}
        failed_audit = json.loads(cli.run("audit", "request", str(failed["requestId"]), *chain, "--json").stdout)
        assert failed_audit["status"] == "FAILED" and failed_audit["verified"]
        (failure_event,) = _events(failed_audit, "RequestFailed")
        assert failure_event["args"]["code"] == int(FailureCode.SHAPE_MISMATCH)
        text = cli.run("audit", "request", str(first["requestId"]), *chain).stdout
        assert text.startswith(f"request {first['requestId']}: COMPLETED, VERIFIED") and "[FAIL]" not in text
        report = tmp_path / "report" / "model.html"  # the directory does not exist yet
        model_out = cli.run("audit", "model", MODEL_NAME, *chain, "--json", "--html", str(report))
        model_audit = json.loads(model_out.stdout)  # stdout is the JSON document alone
        assert model_audit["verified"] and str(report) in model_out.stderr
        page = report.read_text()
        assert page.lstrip().lower().startswith("<!doctype html") or "<html" in page.lower()
        for request in (first, failed, second):
            assert f"<td>{request['requestId']}</td>" in page

        # 4. SIGTERM stops the node cleanly: the loop ends, the checkpoint is closed, exit 0
        os.killpg(node.pid, signal.SIGTERM)
        assert node.wait(20) == 0, node_log.read_text()
        assert _stopped_lines(node_log) == 1, node_log.read_text()

        # 5. a request sent while the node is down waits; the restarted node serves it, once
        x3 = _sample(sample_shape, seed=3)
        np.save(tmp_path / "x3.npy", x3)
        waiting = subprocess.Popen(cli.argv("infer", *chain, "--model", MODEL_NAME, "--input",
                                            str(tmp_path / "x3.npy"), "--wait", "--json", "--timeout", "60"),
                                   env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        cli.background.append(waiting)
        node = cli.start(node_log, "-v", *node_args)
        third_out, third_err = waiting.communicate(timeout=90)
        assert waiting.returncode == 0, third_out + third_err + node_log.read_text()
        third = json.loads(third_out)
        assert third["status"] == "COMPLETED" and third["label"] == _plain_label(plain, x3)
        assert third["requestId"] == second["requestId"] + 1

        everything = json.loads(cli.run("audit", "model", MODEL_NAME, *chain, "--json").stdout)
        by_id = {r["requestId"]: r for r in everything["requests"]}
        assert sorted(by_id) == sorted(r["requestId"] for r in (first, failed, second, third))
        for request in (first, second, third):
            # served once: one result (the delivery carries the claim and the transfer)
            assert [len(_events(by_id[request["requestId"]], n)) for n in
                    ("ResultSubmitted", "RequestFailed")] == [1, 0]
            assert by_id[request["requestId"]]["verified"]
        assert [len(_events(by_id[failed["requestId"]], n)) for n in
                ("ResultSubmitted", "RequestFailed")] == [0, 1]
        assert everything["verified"]

        os.killpg(node.pid, signal.SIGTERM)
        assert node.wait(20) == 0, node_log.read_text()
        assert _stopped_lines(node_log) == 2, node_log.read_text()

        # 6. SIGTERM as soon as the node says it serves
        node = cli.start(node_log, "-v", *node_args)
        _wait_for("node run", lambda: _banners(node_log) == 3, node, node_log)
        os.killpg(node.pid, signal.SIGTERM)
        assert node.wait(20) == 0, node_log.read_text()
        assert _stopped_lines(node_log) == 3, node_log.read_text()

        os.killpg(enclave.pid, signal.SIGTERM)
        assert enclave.wait(20) == 0, enclave_log.read_text()

        # 7. a node started while the enclave is down waits for it (it does not exit); when the
        # enclave comes back (not restored: it lost its models with its process), the node
        # restores it against the chain's anchors and serves
        node = cli.start(node_log, "-v", *node_args)
        _wait_for("node waiting", lambda: "waiting for the enclave" in node_log.read_text(errors="replace"),
                  node, node_log)
        time.sleep(1.0)
        assert node.poll() is None, node_log.read_text()
        enclave = cli.start(enclave_log, "enclave", "serve")
        _wait_for("node run", lambda: _banners(node_log) == 4, node, node_log, timeout=60)
        x4 = _sample(sample_shape, seed=4)
        np.save(tmp_path / "x4.npy", x4)
        fourth = json.loads(cli.run("infer", *chain, "--model", MODEL_NAME, "--input", str(tmp_path / "x4.npy"),
                                    "--wait", "--json", "--timeout", "60").stdout)
        assert fourth["status"] == "COMPLETED" and fourth["label"] == _plain_label(plain, x4), fourth
        os.killpg(node.pid, signal.SIGTERM)
        assert node.wait(20) == 0, node_log.read_text()

        # 8. an account without NODE_ROLE is told so at start and touches nothing
        stranger = {**cli.env, "SPLITSEAL_NODE_ACCOUNT_KEY":
                    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356"}  # anvil account 7
        refused = subprocess.run(cli.argv(*node_args, "--state-dir", str(tmp_path / "stranger")), env=stranger,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "does not hold NODE_ROLE" in refused.stderr, refused.stderr
        assert "serving" not in refused.stdout and not (tmp_path / "stranger").exists()
        os.killpg(enclave.pid, signal.SIGTERM)
        assert enclave.wait(20) == 0, enclave_log.read_text()

        # the node's checkpoint and keys and the requester's key live under SPLITSEAL_HOME
        assert list((home / "var" / "node").glob("node-*.sqlite3")) and (home / "var" / "node" / "input.key").exists()
        assert (home / "var" / "requester" / "key").exists()
    finally:
        cli.kill_all()
        if anvil is not None and anvil.poll() is None:
            os.killpg(anvil.pid, signal.SIGKILL)
            anvil.wait(10)
        if record is not None:
            record.unlink(missing_ok=True)
