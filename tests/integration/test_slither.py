"""Static analysis of the contracts with Slither (pinned in requirements-slither.lock, installed by
scripts/setup into .venv/slither): no finding of medium or high impact in contracts/src may be
left unexplained. Accepted ones are listed with their reason in contracts/slither.triage.json;
low and informational findings are listed in docs/CONTRACTS-TESTING.md.

Slither analyses the same standard-JSON input ``splitseal compile`` builds the artifacts from
(:func:`orchestrator.compile.analysis_input`), run by scripts/slither_findings.py in Slither's
own venv."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.compile import analysis_input, find_compiler
from splitseal.chain.artifacts import CONTRACTS, load_artifact

ROOT = Path(__file__).resolve().parents[2]
SLITHER_PYTHON = ROOT / ".venv" / "slither" / "bin" / "python"
TRIAGE = ROOT / "contracts" / "slither.triage.json"
BLOCKING = ("High", "Medium")


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not SLITHER_PYTHON.exists():
        pytest.skip("Slither is not installed (scripts/setup installs it into .venv/slither)")
    compiler_input = tmp_path_factory.mktemp("slither") / "input.json"
    compiler_input.write_text(json.dumps(analysis_input()))
    proc = subprocess.run(
        [str(SLITHER_PYTHON), str(ROOT / "scripts" / "slither_findings.py"), str(compiler_input),
         "--solc", str(find_compiler().path)],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, f"Slither failed (exit {proc.returncode}):\n{proc.stderr[-8000:]}"
    # Slither logs what it could not parse (e.g. "Missing inheritance") and carries on without it
    assert "ERROR" not in proc.stderr, f"Slither could not parse everything:\n{proc.stderr[-8000:]}"
    return json.loads(proc.stdout)


def test_slither_analysed_every_function_of_every_contract(analysis: dict[str, Any]) -> None:
    for name in CONTRACTS:
        abi_functions = {item["name"] for item in load_artifact(name)["abi"] if item["type"] == "function"}
        missing = abi_functions - set(analysis["implemented"].get(name, []))
        assert not missing, f"Slither did not analyse {name}'s {sorted(missing)}"


def test_no_unexplained_medium_or_high_finding(analysis: dict[str, Any]) -> None:
    accepted = {(entry["check"], entry["element"]) for entry in json.loads(TRIAGE.read_text())["accepted"]}
    blocking = [f for f in analysis["findings"] if f["impact"] in BLOCKING]
    unexplained = [f for f in blocking if (f["check"], f["element"]) not in accepted]
    assert not unexplained, (
        "Slither findings of medium/high impact that contracts/slither.triage.json does not explain "
        "(fix them, or add them there with the reason they are acceptable):\n"
        + "\n\n".join(f"[{f['impact']}] {f['check']} {f['element']} ({f['file']}:{f['lines']})\n{f['description']}"
                      for f in unexplained))
    stale = accepted - {(f["check"], f["element"]) for f in blocking}
    assert not stale, f"contracts/slither.triage.json accepts findings Slither no longer reports; remove them: {sorted(stale)}"
