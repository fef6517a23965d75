"""`splitseal model split` and `splitseal model inspect` as a user runs them, on the committed
reference classifier and its deeper rule: the files appear, split.json records the hashes the
registry needs, inspect re-checks them, and a bad rule exits with status 2 and one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from eth_utils.crypto import keccak

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def splitseal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_model_split_and_inspect(tmp_path: Path) -> None:
    out = tmp_path / "split"
    proc = splitseal("model", "split", "models/digits_classifier.onnx", "--rule", "rules/digits_classifier_deep.toml",
                     "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "verified on 360 samples (held-out digits test split)" in proc.stdout
    summary = json.loads((out / "split.json").read_text())
    pkg = (out / "head.pkg").read_bytes()
    assert summary["head"]["package_hash"] == "0x" + bytes(keccak(pkg)).hex()
    assert summary["rule"]["hash"] == "0x" + bytes(keccak((ROOT / "rules/digits_classifier_deep.toml").read_bytes())).hex()
    assert summary["model"]["hash"] == "0x" + bytes(keccak((ROOT / "models/digits_classifier.onnx").read_bytes())).hex()
    assert summary["head"]["nodes"][0] == "backbone.block2.conv"
    assert summary["verification"]["max_abs_diff_interpreter"] <= 1e-5

    proc = splitseal("model", "inspect", str(out))
    assert proc.returncode == 0 and "files match split.json" in proc.stdout
    (out / "head.index").write_bytes((out / "head.index").read_bytes()[:-1])
    proc = splitseal("model", "inspect", str(out))
    assert proc.returncode == 2 and proc.stderr.startswith("error: parameter index")

    proc = splitseal("model", "inspect", "models/digits_classifier.onnx", "--rule", "rules/digits_classifier.toml")
    assert proc.returncode == 0 and "neck.fc.weight" in proc.stdout and "head*" in proc.stdout


def test_bad_rule_is_one_line_and_status_2(tmp_path: Path) -> None:
    rule = tmp_path / "r.toml"
    rule.write_text('version = 1\n[split]\nat_node = "neck.fcc"\n[protect]\nparameters = ["neck.*"]\n'
                    '[output]\npolicy = "label"\n')
    proc = splitseal("model", "split", "models/digits_classifier.onnx", "--rule", str(rule), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    # the progress lines ("... STEP") as the split went, then the one error line
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("... ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "did you mean ['neck.fc'" in lines[0]
