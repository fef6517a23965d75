"""`splitseal chain up|status|down` and `splitseal deploy` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSEAL_")}
    env["SPLITSEAL_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.e2e
@pytest.mark.integration
def test_chain_up_deploy_twice_and_down(tmp_path: Path) -> None:
    up = cli(tmp_path, "chain", "up")
    assert up.returncode == 0, up.stderr
    record = json.loads((tmp_path / "var" / "chain" / "anvil.json").read_text())
    try:
        assert "http=http://127.0.0.1:" in up.stdout and "ws=ws://127.0.0.1:" in up.stdout
        assert alive(record["pid"])
        assert cli(tmp_path, "chain", "up").stdout.startswith("anvil already running")
        assert "anvil running" in cli(tmp_path, "chain", "status").stdout

        first = cli(tmp_path, "deploy", "--chain", "anvil")
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("deployed on chain anvil (chain id 31337)")
        deployment = json.loads((tmp_path / "deployments" / "31337.json").read_text())
        assert set(deployment["contracts"]) == {"ModelRegistry", "ParameterIndex", "BackboneExecution",
                                                "EnclaveTransfer", "FeatureShareRegistry"}
        assert all(len(tx) == 66 for tx in deployment["txHashes"].values())
        again = cli(tmp_path, "deploy", "--chain", "anvil", "--json")
        assert json.loads(again.stdout)["contracts"] == deployment["contracts"]
        assert "found live deployment" in cli(tmp_path, "deploy", "--chain", "anvil").stdout
    finally:
        down = cli(tmp_path, "chain", "down")
    assert down.returncode == 0 and "anvil stopped" in down.stdout
    assert not alive(record["pid"])
    assert not (tmp_path / "var" / "chain" / "anvil.json").exists()
    assert "no anvil node is running" in cli(tmp_path, "chain", "down").stdout
    status = cli(tmp_path, "chain", "status")
    assert status.returncode == 3 and "splitseal chain up" in status.stderr  # runtime: nothing to reach
    # without a running node, --chain anvil says what to do
    refused = cli(tmp_path, "deploy", "--chain", "anvil")
    assert refused.returncode == 3 and "start one with `splitseal chain up`" in refused.stderr


@pytest.mark.e2e
def test_deploy_on_the_embedded_chain(tmp_path: Path) -> None:
    done = cli(tmp_path, "deploy")
    assert done.returncode == 0, done.stderr
    assert "deployed on chain embedded" in done.stdout and "lives inside this process" in done.stdout
    for name in ("ModelRegistry", "ParameterIndex", "BackboneExecution", "EnclaveTransfer", "FeatureShareRegistry"):
        assert name in done.stdout


@pytest.mark.e2e
def test_unknown_chain_is_a_clear_error(tmp_path: Path) -> None:
    done = cli(tmp_path, "deploy", "--chain", "mainnet")
    assert done.returncode == 2
    assert "unknown chain 'mainnet'" in done.stderr
    unreachable = cli(tmp_path, "deploy", "--chain", "http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "cannot reach the chain" in unreachable.stderr


@pytest.mark.e2e
def test_chain_up_on_a_busy_port_fails_clearly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = cli(tmp_path, "chain", "up", "--port", str(port))
    assert done.returncode == 3 and f"port {port} on 127.0.0.1 is in use" in done.stderr
    assert "anvil started" not in done.stdout
    assert not (tmp_path / "var" / "chain" / "anvil.json").exists()
