"""The hybrid mode from the CLI as a user runs it on anvil: split by the hybrid rule, provision the
enclave, start the MPC cluster on the split's backbone, `splitseal mpc infer`, then the auditor's
`splitseal audit request` names the nodes that contributed. The chain, the enclave and the MPC
nodes are processes of their own; the one-shot commands run in the test's process
(tests/support/in_process_cli.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.support.in_process_cli import InProcessCli, user_environment

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def test_a_hybrid_request_from_the_cli_completes_and_audits(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.training import load_split

    home = tmp_path / "home"
    config = tmp_path / "splitseal.toml"
    config.write_text(f'[enclave]\nsocket_path = "{tmp_path / "e.sock"}"\n')  # AF_UNIX paths are short
    user_environment(monkeypatch, home)
    monkeypatch.chdir(ROOT)
    env = dict(os.environ)
    cli = InProcessCli(capsys, config)

    _, _, x_test, _ = load_split()
    x = x_test[11]
    np.save(tmp_path / "x.npy", x)
    enclave = None
    cli("chain", "up")
    try:
        cli("deploy", "--chain", "anvil")
        log = open(tmp_path / "enclave.log", "ab")
        enclave = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "--config", str(config), "enclave",
                                    "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while not (tmp_path / "e.sock").exists():
            assert enclave.poll() is None and time.monotonic() < deadline, (tmp_path / "enclave.log").read_text()
            time.sleep(0.05)
        cli("enclave", "attest", "--chain", "anvil")
        split = tmp_path / "split"
        cli("model", "split", str(ROOT / "models" / "digits_classifier.onnx"), "--rule",
            str(ROOT / "rules" / "digits_hybrid.toml"), "--out", str(split))
        cli("model", "provision", str(split), "--model-id", "digits-hybrid", "--register", "--allow-measurement",
            "--chain", "anvil")
        cli("mpc", "up", "--chain", "anvil", "--model", str(split / "node" / "backbone.onnx"))
        try:
            done = json.loads(cli("mpc", "infer", "--model", "digits-hybrid", str(tmp_path / "x.npy"),
                                  "--authorize", "--json").stdout)
        finally:
            cli("mpc", "down", expect=None)
        assert done["status"] == "COMPLETED", done
        whole = ort.InferenceSession(str(ROOT / "models" / "digits_classifier.onnx"))
        expected = whole.run(None, {"image": x[None]})[0][0]
        assert done["label"] == int(np.argmax(expected))
        assert np.max(np.abs(np.asarray(done["scores"]) - expected)) < 1e-3
        assert done["hybrid"]["contributed"] == done["hybrid"]["nodes"] and len(done["hybrid"]["nodes"]) == 2

        audit = cli("audit", "request", str(done["requestId"]), "--chain", "anvil")
        assert "VERIFIED" in audit.stdout.splitlines()[0]
        for node in done["hybrid"]["nodes"]:
            assert f"{node}: input commitment" in audit.stdout and "signed" in audit.stdout
        assert "[ok] each node's HybridShare signature recovers to it" in audit.stdout
        # without the relay's blob store the contributions cannot be checked, and the audit says so
        elsewhere = cli("audit", "request", str(done["requestId"]), "--chain", "anvil", "--blobs",
                        str(tmp_path / "empty"), expect=1)
        assert "[FAIL] contributions record available" in elsewhere.stdout
    finally:
        if enclave is not None and enclave.poll() is None:
            os.killpg(enclave.pid, signal.SIGTERM)
            enclave.wait(10)
        cli("chain", "down", expect=None)
