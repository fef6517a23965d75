"""The CLI explains itself: --version, documented exit statuses, and a --help that loads no
chain or model library (heavy modules load when a command runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.cli import EXIT_RUNTIME, EXIT_USAGE, main

pytestmark = pytest.mark.e2e


def test_version_and_exit_statuses_are_documented(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("splitseal ")
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "exit status: 0 done; 1 a negative outcome" in out
    assert main(["--config", "/nonexistent.toml", "chain", "status"]) == EXIT_USAGE  # a config that does not exist
    assert "error:" in capsys.readouterr().err


def test_a_runtime_failure_is_status_3(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'home = "{tmp_path}"\n')
    assert main(["--config", str(config), "deploy", "--chain", "http://127.0.0.1:9"]) == EXIT_RUNTIME
    assert "cannot reach the chain" in capsys.readouterr().err


def test_help_loads_no_chain_or_model_library():
    code = ("import sys; from orchestrator.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('eth_account', 'web3', 'onnx', 'onnxruntime', 'eth_tester') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
