"""``--json`` on every command: each leaf of the argparse tree accepts it, and each command's
output parses as the shape docs/CLI.md documents (one document; JSON lines for the long-running
ones), on a real anvil with the enclave, the node and the MPC cluster as their own processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.cli import LONG_RUNNING, build_parser, commands
from splitseal.config import PROJECT_ROOT
from tests.support.in_process_cli import InProcessCli, user_environment

pytestmark = pytest.mark.e2e

MODEL = PROJECT_ROOT / "models" / "digits_classifier.onnx"
RULE = PROJECT_ROOT / "rules" / "digits_classifier.toml"
CONTRACTS = {"ModelRegistry", "ParameterIndex", "BackboneExecution", "EnclaveTransfer", "FeatureShareRegistry"}


def test_every_leaf_command_accepts_json():
    import shlex

    from orchestrator.cli import EXAMPLES

    parser = build_parser()
    leaves = {path: child for path, child, _ in commands(parser)}
    assert len(leaves) >= 30 and set(LONG_RUNNING) <= set(leaves)
    for path, child in leaves.items():
        flags = {opt: action for action in child._actions for opt in action.option_strings}
        assert "--json" in flags, f"`splitseal {path}` has no --json"
        argv = [*shlex.split(EXAMPLES[path])[1:], "--json"]
        assert parser.parse_args(argv).json is True, path
        assert ("JSON lines" in flags["--json"].help) == (path in LONG_RUNNING), path


def _json(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 0, progress: str = "") -> Any:
    done = InProcessCli(capsys)(*argv, "--json", expect=status)
    assert progress in done.stderr, done.stderr  # progress goes to stderr, so stdout stays one document
    return json.loads(done.stdout)


def test_offline_commands_print_their_documents(tmp_path, capsys, monkeypatch):
    for name in [k for k in os.environ if k.startswith("SPLITSEAL_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "c.toml"
    config.write_text(f'home = "{tmp_path}"\n')
    base = ["--config", str(config)]

    written = _json([*base, "model", "example-input", str(MODEL), "--out", str(tmp_path / "x.npy")], capsys)
    assert written["shape"] == [1, 16, 16] and written["inputShape"] == ["N", 1, 16, 16]
    assert np.load(written["file"]).shape == (1, 16, 16)
    image = _json([*base, "mpc", "example-image", "--digit", "3", "--out", str(tmp_path / "a.png")], capsys)
    assert image == {"file": str(tmp_path / "a.png"), "digit": 3, "index": 0, "width": 16, "height": 16}
    inspected = _json([*base, "model", "inspect", str(MODEL), "--rule", str(RULE)], capsys)
    assert inspected["parameters"] and not inspected.get("problems")
    split = _json([*base, "model", "split", str(MODEL), "--rule", str(RULE), "--out", str(tmp_path / "s"),
                   "--random", "4"], capsys, progress="... verifying backbone + head = model on the 4 seeded")
    assert split["backbone"]["hash"].startswith("0x") and split["head"]["package_file"] == "head.pkg"
    assert _json([*base, "chain", "down"], capsys) == {"stopped": False, "pid": None}
    trained = _json([*base, "model", "train", "--model", "digits_classifier", "--max-iters", "2", "--out",
                     str(tmp_path / "m"), "--no-progress"], capsys, status=1)  # two iterations miss the target
    (record,) = trained["models"]
    assert record["model"] == "digits_classifier" and not record["meets_target"] and Path(record["path"]).exists()
    deployed = _json([*base, "deploy"], capsys, progress="... deploying ModelRegistry (1/5)")  # note: stderr
    assert set(deployed["contracts"]) == CONTRACTS


# --- the whole flow, every command with --json ----------------------------------------------------

class Background:
    """A long-running command: JSON lines on stdout (a file), its log on stderr (another)."""

    def __init__(self, argv: list[str], env: dict[str, str], folder: Path, name: str) -> None:
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def events(self) -> list[dict[str, Any]]:
        text = self.out.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line being written is read next time
        try:
            return [json.loads(line) for line in complete.splitlines() if line.strip()]
        except ValueError:
            raise AssertionError(f"{self.out.name} is not JSON lines:\n{text[-2000:]}") from None

    def wait_for(self, name: str, count: int = 1, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if e["event"] == name]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode} before {name!r}: {self.events()}\n"
                                     + self.err.read_text()[-3000:])
            assert time.monotonic() < deadline, f"no {name!r} event after {timeout} s: {self.events()}"
            time.sleep(0.05)

    def stop(self) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.mark.integration
def test_every_command_in_json_on_anvil(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The long-running commands (enclave, node, keeper, dealer) are processes of their own; the
    one-shot commands run through ``main`` in this process, as ``test_offline_commands_...`` does:
    the same parser, handlers and documents, without ~2.5 s of interpreter start and imports per
    command (web3 alone takes 2 s to import here). ``tests/e2e/test_inference_cli.py`` runs the
    one-shot commands as subprocesses, exit statuses and all."""
    from tests.e2e.test_inference_cli import SPLITSEAL, _clean_env, _start_anvil

    home = tmp_path / "home"
    config = tmp_path / "splitseal.toml"
    config.write_text(f'[enclave]\nsocket_path = "{tmp_path / "e.sock"}"\n')
    env = _clean_env(home)
    user_environment(monkeypatch, home)

    def argv(*args: str) -> list[str]:
        return [*SPLITSEAL, "--config", str(config), *args, "--json"]

    def run(*args: str, status: int = 0, progress: str = "") -> Any:
        return _json(["--config", str(config), *args], capsys, status=status, progress=progress)

    background: list[Background] = []

    def start(name: str, *args: str) -> Background:
        process = Background(argv(*args), env, tmp_path, name)
        background.append(process)
        return process

    anvil, url, chain_id = _start_anvil(tmp_path / "anvil.log")
    chain = ("--chain", url)
    try:
        assert set(run("deploy", *chain)["contracts"]) == CONTRACTS

        enclave = start("enclave", "enclave", "serve")
        ready = enclave.wait_for("ready")
        assert ready["socket"] == str(tmp_path / "e.sock") and ready["measurement"].startswith("0x")
        status = run("enclave", "status")
        assert status["enclave"] == ready["address"] and status["models"] == []
        attested = run("enclave", "attest", *chain)
        assert attested["enclave"] == ready["address"] and attested["tx"]

        split_dir = tmp_path / "split"
        split = run("model", "split", str(MODEL), "--rule", str(RULE), "--out", str(split_dir))
        provisioned = run("model", "provision", str(split_dir), *chain, "--model-id", "json-digits",
                          "--register", "--allow-measurement", progress="... the enclave decrypts and verifies the index")
        assert provisioned["serving"] and provisioned["version"] == 1 and provisioned["enclave"] == ready["address"]
        assert split["head"]["package_file"] == "head.pkg"

        node = start("node", "node", "run", *chain, "--backbone", str(split_dir / "node"), "--authorize")
        started = node.wait_for("started")
        assert started["chainId"] == chain_id and started["enclave"] == ready["address"]

        x = np.load(run("model", "example-input", str(MODEL), "--out", str(tmp_path / "x.npy"))["file"])
        assert x.shape == (1, 16, 16)
        sent = run("infer", *chain, "--model", "json-digits", "--input", str(tmp_path / "x.npy"))
        served = run("infer", *chain, "--model", "json-digits", "--input", str(tmp_path / "x.npy"), "--wait",
                     "--timeout", "60")
        assert served["status"] == "COMPLETED" and served["requestId"] == sent["requestId"] + 1
        line = node.wait_for("request", count=2)
        assert {e["requestId"] for e in node.events() if e["event"] == "request"} >= {sent["requestId"],
                                                                                   served["requestId"]}
        assert line["stage"] == "COMPLETED" and line["enclaveMs"] >= 0
        calls = [e["call"] for e in enclave.events() if e["event"] == "call"]
        assert {"status", "attest", "provision_head", "provision_index", "infer"} <= set(calls), calls
        assert calls.count("infer") == 2 and all(e["ok"] for e in enclave.events() if e["event"] == "call")

        keeper = subprocess.run(argv("node", "keeper", *chain, "--once"), env=env, capture_output=True,
                                text=True, timeout=120)
        lines = [json.loads(line) for line in keeper.stdout.splitlines()]
        assert keeper.returncode == 0 and [e["event"] for e in lines] == ["started", "sweep", "stopped"], keeper

        audit = run("audit", "request", str(served["requestId"]), *chain)
        assert audit["verified"] and audit["status"] == "COMPLETED"
        model_audit = run("audit", "model", "json-digits", *chain)
        assert model_audit["verified"] and len(model_audit["requests"]) == 2
        answers = run("audit", "enclave", ready["address"], *chain, "--socket", str(tmp_path / "e.sock"))
        assert answers["ok"]

        # the MPC cluster, recorded on the same chain
        mpc = run("mpc", "up", *chain)
        assert mpc["parties"] == 2 and len(mpc["nodePorts"]) == 2 and mpc["setId"] is not None
        try:
            run("mpc", "example-image", "--digit", "4", "--out", str(tmp_path / "alice.png"))
            run("mpc", "example-image", "--digit", "4", "--index", "1", "--out", str(tmp_path / "probe.png"))
            enrolled = run("mpc", "enroll", "--subject", "alice", str(tmp_path / "alice.png"),
                           progress="... sharing the capture among 2 nodes, computing feature shares and recording")
            assert enrolled["subject"] == "alice" and len(enrolled["commitments"]) == 2 and enrolled["tx"]
            verified = run("mpc", "verify", "--subject", "alice", str(tmp_path / "probe.png"))
            assert verified["kind"] == "verify" and verified["accepted"] and verified["tx"]
            identified = run("mpc", "identify", str(tmp_path / "probe.png"))
            assert identified["kind"] == "identify" and identified["subject"] == "alice"
            nodes = run("mpc", "status")["nodes"]
            assert [n["enrolled"] for n in nodes] == [1, 1]
            history = run("mpc", "audit", "alice")
            assert history["verified"] and len(history["decisions"]) == 2
            subject = run("audit", "subject", "alice", *chain)
            assert subject["verified"] and subject["subjectId"] == history["subjectId"]
        finally:
            stopped = run("mpc", "down")
        assert len(stopped["stopped"]) == 3  # two nodes and the dealer
        dealer = start("dealer", "mpc", "node", "run", "--dealer")
        assert dealer.wait_for("ready")["role"] == "dealer"
        assert dealer.stop() == 0 and dealer.events()[-1]["event"] == "stopped"

        # SIGTERM: the node and the enclave say they stopped; a restarted enclave is restored
        assert node.stop() == 0
        assert node.events()[-1]["event"] == "stopped" and node.events()[-1]["completed"] == 2
        assert enclave.stop() == 0 and enclave.events()[-1]["event"] == "stopped"
        enclave = start("enclave-again", "enclave", "serve")
        enclave.wait_for("ready")
        restored = run("enclave", "restore", *chain)
        assert restored["models"] == 1 and restored["state_version"] >= 1
        assert enclave.stop() == 0

        # errors are documents too
        failed = run("audit", "request", "999", *chain, status=2)
        assert failed["error"]["exit"] == 2 and "999" in failed["error"]["message"]
    finally:
        for process in background:
            process.kill()
        if anvil.poll() is None:
            os.killpg(anvil.pid, signal.SIGKILL)
            anvil.wait(10)


@pytest.mark.integration
def test_chain_up_status_down_in_json(tmp_path: Path) -> None:
    from tests.e2e.test_inference_cli import SPLITSEAL, _clean_env

    env = _clean_env(tmp_path)

    def run(*args: str, status: int = 0) -> Any:
        proc = subprocess.run([*SPLITSEAL, *args, "--json"], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == status, proc
        return json.loads(proc.stdout)

    up = run("chain", "up")
    try:
        assert up["started"] and up["http"] == f"http://127.0.0.1:{up['port']}" and up["ws"].startswith("ws://")
        assert run("chain", "up") == {**up, "started": False}
        assert run("chain", "status") == {**{k: v for k, v in up.items() if k != "started"}, "running": True}
    finally:
        down = run("chain", "down")
    assert down == {"stopped": True, "pid": up["pid"]}
    assert run("chain", "status", status=3)["error"]["type"] == "ChainError"
