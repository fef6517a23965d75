"""MPC from the CLI on anvil, audited with `splitseal audit subject` (the auditor's command).

The chain (`chain up`) and the cluster's nodes and dealer (`mpc up`) are processes of their own;
the one-shot commands run in the test's process (tests/support/in_process_cli.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpc.client import faces
from tests.support.in_process_cli import InProcessCli, user_environment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> InProcessCli:
    # where the face data lives is not configuration
    user_environment(monkeypatch, tmp_path, keep=("SPLITSEAL_FACES_CACHE",))
    monkeypatch.chdir(ROOT)
    return InProcessCli(capsys)


@pytest.mark.e2e
@pytest.mark.integration
def test_enrol_verify_and_audit_a_subject_from_the_cli(tmp_path: Path, cli: InProcessCli) -> None:
    from orchestrator.training import load_split

    _, _, x, y = load_split()
    fours = np.flatnonzero(y == 4)
    np.save(tmp_path / "enrol.npy", x[fours[0]][0])
    np.save(tmp_path / "probe.npy", x[fours[1]][0])
    cli("chain", "up")
    try:
        cli("deploy", "--chain", "anvil")
        cli("mpc", "up", "--chain", "anvil")
        try:
            cli("mpc", "enroll", "--subject", "alice", str(tmp_path / "enrol.npy"))
            verified = cli("mpc", "verify", "--subject", "alice", str(tmp_path / "probe.npy"))
            assert "ACCEPTED" in verified.stdout
        finally:
            cli("mpc", "down", expect=None)
        audit = cli("audit", "subject", "alice", "--chain", "anvil")
        assert "VERIFIED" in audit.stdout
        assert "2 share commitments, node signatures ok" in audit.stdout
        assert "verify at block" in audit.stdout and "co-signed by all nodes: ok" in audit.stdout
        unknown = cli("audit", "subject", "bob", "--chain", "anvil", expect=None)
        assert unknown.returncode == 1 and "nothing recorded" in unknown.stdout
    finally:
        cli("chain", "down", expect=None)


@pytest.mark.e2e
@pytest.mark.integration
@pytest.mark.skipif(not faces.available(), reason="face data missing: run scripts/setup")
def test_faces_from_the_cli_on_anvil(tmp_path: Path, cli: InProcessCli) -> None:
    """SFace cluster from the CLI: ORL photos as PNG files, a genuine probe accepted, an impostor
    rejected (exit 1), identification, all co-signed on-chain and audited."""
    for person, photo, name in (("s1", 1, "alice"), ("s1", 2, "probe"), ("s2", 1, "bob"), ("s3", 1, "other")):
        out = cli("mpc", "example-image", "--face", person, "--index", str(photo),
                  "--out", str(tmp_path / f"{name}.png"))
        assert f"ORL {person}/{photo}, 92x112 greyscale" in out.stdout
    cli("chain", "up")
    try:
        cli("deploy", "--chain", "anvil")
        up = cli("mpc", "up", "--model", "sface", "--mode", "plaintext", "--chain", "anvil")
        assert "capture=face" in up.stdout
        try:
            cli("mpc", "enroll", "--subject", "alice", str(tmp_path / "alice.png"))
            cli("mpc", "enroll", "--subject", "bob", str(tmp_path / "bob.png"))
            genuine = cli("mpc", "verify", "--subject", "alice", str(tmp_path / "probe.png"))
            assert "verify: ACCEPTED" in genuine.stdout
            impostor = cli("mpc", "verify", "--subject", "alice", str(tmp_path / "other.png"), expect=None)
            assert impostor.returncode == 1 and "verify: REJECTED" in impostor.stdout
            found = cli("mpc", "identify", str(tmp_path / "probe.png"))
            assert "identify: ACCEPTED subject=alice" in found.stdout
        finally:
            cli("mpc", "down", expect=None)
        audit = cli("audit", "subject", "alice", "--chain", "anvil")
        assert "VERIFIED" in audit.stdout and "2 share commitments, node signatures ok" in audit.stdout
        assert audit.stdout.count("co-signed by all nodes: ok") == 3  # two verifications, one identification
    finally:
        cli("chain", "down", expect=None)
