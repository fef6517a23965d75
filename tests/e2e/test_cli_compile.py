"""`splitseal compile --check` as a user runs it: a full offline compilation (solc-js or a native
solc 0.8.37) whose output must equal the committed artifacts, byte for byte."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_compile_check_passes_on_the_committed_artifacts() -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "compile", "--check"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"splitseal compile --check failed:\n{proc.stdout}\n{proc.stderr}"
    from orchestrator.compile import CONTRACTS

    assert f"contracts/build is up to date ({len(CONTRACTS)} contracts, solc 0.8.37+commit." in proc.stdout


def test_compile_check_prints_its_document_under_json() -> None:
    import json

    from orchestrator.compile import CONTRACTS

    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "compile", "--check", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["checked"] and doc["changed"] == [] and len(doc["contracts"]) == len(CONTRACTS)
    assert doc["solc"].startswith("0.8.37+commit.") and doc["compiler"] in ("solc-js", "native solc")
