"""MPC from the CLI on anvil, audited with `splitseal audit subject` (the auditor's command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSEAL_")}
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
