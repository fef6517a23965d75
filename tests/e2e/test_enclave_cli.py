"""The enclave from the command line, as a user runs it, on a real anvil node:
`deploy` pins the local platform's quoting key, `enclave serve` starts the process,
`enclave attest` registers it, `model provision --register` registers, encrypts, provisions and
confirms, `enclave status` shows it serving; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support import enclave_support as es

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
SPLITSEAL = [sys.executable, "-m", "orchestrator.cli"]


def _run(env, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SPLITSEAL, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"splitseal {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_enclave_from_the_cli_attests_registers_and_is_provisioned(tmp_path):
    from splitseal.chain import AnvilNode

    node = AnvilNode.start()
    env = dict(os.environ, SPLITSEAL_ENCLAVE_STATE_DIR=str(tmp_path / "enclave"),
               SPLITSEAL_ENCLAVE_SOCKET_PATH=str(tmp_path / "enclave.sock"))
    es.write_split(tmp_path / "split")
    serve = None
    try:
        chain = ["--chain", node.http_url]
        _run(env, "deploy", *chain)
        serve = subprocess.Popen([*SPLITSEAL, "enclave", "serve"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + 30
        while not (tmp_path / "enclave.sock").exists():
            assert serve.poll() is None and time.monotonic() < deadline, "enclave did not start"
            time.sleep(0.05)
        attested = json.loads(_run(env, "enclave", "attest", *chain, "--json").stdout)
        provisioned = json.loads(_run(env, "model", "provision", str(tmp_path / "split"), *chain,
                                      "--model-id", "cli-canary", "--register", "--allow-measurement",
                                      "--json").stdout)
        status = json.loads(_run(env, "enclave", "status", "--json").stdout)
        assert provisioned["enclave"] == attested["enclave"] == status["enclave"]
        assert provisioned["serving"] and status["models"][0]["serving"]
        # the index step seals once more after the anchored HeadLoaded version
        assert status["models"][0]["state_version"] >= provisioned["state_version"] >= 1
        # a second provisioning run of the same version only re-loads the head (index already verified)
        again = json.loads(_run(env, "model", "provision", str(tmp_path / "split"), *chain,
                                "--model-id", "cli-canary", "--json").stdout)
        assert again["state_version"] > provisioned["state_version"]
        os.killpg(serve.pid, signal.SIGTERM)
        assert serve.wait(20) == 0
        assert not (tmp_path / "enclave.sock").exists()
        # no step printed the canary weights
        output = serve.stdout.read() if serve.stdout else ""
        assert not es.find_leaks(es.canary_chunks(), output.encode())
    finally:
        if serve is not None and serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        node.stop()
