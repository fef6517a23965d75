"""`splitseal demo` as the README runs it: the whole flow on the embedded chain and on anvil."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpc.client import faces

ROOT = Path(__file__).resolve().parents[2]


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # the caller's configuration stays out; where the face data lives is not configuration
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSEAL_") or k == "SPLITSEAL_FACES_CACHE"}
    env["SPLITSEAL_HOME"] = str(tmp_path)
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "demo", "--requests", "4", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def check_output(out: str, mpc: bool = True) -> None:
    assert "accuracy 1.0000" in out or "identical predictions: 100%" in out, out
    assert "VERIFIED" in out and "[FAIL]" not in out
    assert "audit of request 4 verified" in out
    if not mpc:
        assert "[mpc]" not in out and "hybrid" not in out
    elif faces.available():  # SFace on real ORL faces
        assert "[mpc] model: SFace" in out
        assert out.count("YuNet-aligned on the terminal") == 3
        assert "[mpc] verify s1 with a genuine probe (ORL s1/2): accepted" in out
        assert "[mpc] verify s1 with an impostor probe (ORL s2/2): rejected" in out
        assert "[mpc] identify ORL s3/2: s3 " in out
        assert "[mpc] audit s1: 1 enrolment(s), 2 decision(s), signatures verified" in out
    else:
        assert "the digits model instead" in out
        assert "[mpc] verify digit-4 with a genuine probe: accepted" in out
        assert "[mpc] verify digit-4 with an impostor probe: rejected" in out
        assert "signatures verified" in out
    # real pretrained models on the same system: SFace embeddings with the sample's EER, one OCR line
    assert "face verification EER on this sample: 0.00% through the chain, 0.00% plaintext" in out, out
    assert "read through the chain as 'splitseal 2026'" in out


@pytest.mark.e2e
def test_demo_on_the_embedded_chain(tmp_path: Path) -> None:
    done = run_demo(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    check_output(done.stdout)
    # everything it wrote lives under SPLITSEAL_HOME
    assert (tmp_path / "var" / "demo" / "split" / "split.json").exists()


@pytest.mark.e2e
@pytest.mark.integration
def test_demo_on_anvil(tmp_path: Path) -> None:
    # The MPC and hybrid sections on anvil are the CLI tests' (tests/e2e/test_mpc_audit_cli.py,
    # test_hybrid_cli.py: the same client calls, as a user types them); the embedded run above has them too.
    done = run_demo(tmp_path, "--chain", "anvil", "--no-mpc")
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    check_output(done.stdout, mpc=False)
    assert "anvil, chain id 31337" in done.stdout


@pytest.mark.e2e
def test_demo_refuses_a_bad_request_count(tmp_path: Path) -> None:
    done = run_demo(tmp_path, "--requests", "0")
    assert done.returncode == 2
    assert "error: --requests must be at least 1" in done.stderr


@pytest.mark.e2e
@pytest.mark.integration
def test_demo_against_an_rpc_url_with_one_configured_key(tmp_path: Path) -> None:
    """Any JSON-RPC endpoint: the deployer's key plays every role; a rerun adds a model version."""
    from splitseal.chain import AnvilNode

    node = AnvilNode.start()
    try:
        key = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # dev account 1
        env_key = {"SPLITSEAL_CHAIN_ADMIN_KEY": key}
        for run, version in ((1, 1), (2, 2)):
            env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSEAL_")}
            env.update(env_key, SPLITSEAL_HOME=str(tmp_path))
            done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "demo", "--chain", node.http_url,
                                   "--requests", "2", "--no-mpc", "--no-pretrained"], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
            assert f"version {version}" in done.stdout
            assert "2/2 requests served" in done.stdout and "verified" in done.stdout
        assert (tmp_path / "deployments" / "31337.json").exists()
    finally:
        node.stop()
