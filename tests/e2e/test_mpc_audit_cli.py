"""MPC from the CLI on anvil, audited with `splitseal audit subject` (the auditor's command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpc.client import faces

ROOT = Path(__file__).resolve().parents[2]


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # the caller's configuration stays out; where the face data lives is not configuration
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSEAL_") or k == "SPLITSEAL_FACES_CACHE"}
    env["SPLITSEAL_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"{args}: {done.stderr[-1500:]}"
    return done


@pytest.mark.e2e
@pytest.mark.integration
def test_enrol_verify_and_audit_a_subject_from_the_cli(tmp_path: Path) -> None:
    from orchestrator.training import load_split

    _, _, x, y = load_split()
    fours = np.flatnonzero(y == 4)
    np.save(tmp_path / "enrol.npy", x[fours[0]][0])
    np.save(tmp_path / "probe.npy", x[fours[1]][0])
    cli(tmp_path, "chain", "up")
    try:
        cli(tmp_path, "deploy", "--chain", "anvil")
        cli(tmp_path, "mpc", "up", "--chain", "anvil")
        try:
            cli(tmp_path, "mpc", "enroll", "--subject", "alice", str(tmp_path / "enrol.npy"))
            verified = cli(tmp_path, "mpc", "verify", "--subject", "alice", str(tmp_path / "probe.npy"))
            assert "ACCEPTED" in verified.stdout
        finally:
            cli(tmp_path, "mpc", "down", check=False)
        audit = cli(tmp_path, "audit", "subject", "alice", "--chain", "anvil")
        assert "VERIFIED" in audit.stdout
        assert "2 share commitments, node signatures ok" in audit.stdout
        assert "verify at block" in audit.stdout and "co-signed by all nodes: ok" in audit.stdout
        unknown = cli(tmp_path, "audit", "subject", "bob", "--chain", "anvil", check=False)
        assert unknown.returncode == 1 and "nothing recorded" in unknown.stdout
    finally:
        cli(tmp_path, "chain", "down", check=False)


@pytest.mark.e2e
@pytest.mark.integration
@pytest.mark.skipif(not faces.available(), reason="face data missing: run scripts/setup")
def test_faces_from_the_cli_on_anvil(tmp_path: Path) -> None:
    """SFace cluster from the CLI: ORL photos as PNG files, a genuine probe accepted, an impostor
    rejected (exit 1), identification, all co-signed on-chain and audited."""
    for person, photo, name in (("s1", 1, "alice"), ("s1", 2, "probe"), ("s2", 1, "bob"), ("s3", 1, "other")):
        out = cli(tmp_path, "mpc", "example-image", "--face", person, "--index", str(photo),
                  "--out", str(tmp_path / f"{name}.png"))
        assert f"ORL {person}/{photo}, 92x112 greyscale" in out.stdout
    cli(tmp_path, "chain", "up")
    try:
        cli(tmp_path, "deploy", "--chain", "anvil")
        up = cli(tmp_path, "mpc", "up", "--model", "sface", "--mode", "plaintext", "--chain", "anvil")
        assert "capture=face" in up.stdout
        try:
            cli(tmp_path, "mpc", "enroll", "--subject", "alice", str(tmp_path / "alice.png"))
            cli(tmp_path, "mpc", "enroll", "--subject", "bob", str(tmp_path / "bob.png"))
            genuine = cli(tmp_path, "mpc", "verify", "--subject", "alice", str(tmp_path / "probe.png"))
            assert "verify: ACCEPTED" in genuine.stdout
            impostor = cli(tmp_path, "mpc", "verify", "--subject", "alice", str(tmp_path / "other.png"), check=False)
            assert impostor.returncode == 1 and "verify: REJECTED" in impostor.stdout
            found = cli(tmp_path, "mpc", "identify", str(tmp_path / "probe.png"))
            assert "identify: ACCEPTED subject=alice" in found.stdout
        finally:
            cli(tmp_path, "mpc", "down", check=False)
        audit = cli(tmp_path, "audit", "subject", "alice", "--chain", "anvil")
        assert "VERIFIED" in audit.stdout and "2 share commitments, node signatures ok" in audit.stdout
        assert audit.stdout.count("co-signed by all nodes: ok") == 3  # two verifications, one identification
    finally:
        cli(tmp_path, "chain", "down", check=False)
