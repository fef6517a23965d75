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


def test_example_inputs_for_the_step_by_step(tmp_path, capsys):
    """The README's step-by-step makes its inputs with these commands; the files they write are
    what `infer --input` and the MPC terminal read."""
    import numpy as np

    from mpc.client.terminal import read_image
    from orchestrator.cli import main as cli
    from splitseal.config import PROJECT_ROOT

    assert cli(["model", "example-input", str(PROJECT_ROOT / "models" / "digits_classifier.onnx"),
                "--out", str(tmp_path / "image.npy")]) == 0
    x = np.load(tmp_path / "image.npy")
    assert x.shape == (1, 16, 16) and x.dtype == np.float32
    assert cli(["mpc", "example-image", "--digit", "3", "--out", str(tmp_path / "alice.png")]) == 0
    assert cli(["mpc", "example-image", "--digit", "3", "--index", "99999", "--out", str(tmp_path / "x.png")]) == 2
    assert "wrote" in capsys.readouterr().out
    assert np.asarray(read_image(tmp_path / "alice.png")).shape[-2:] == (16, 16)


def test_every_command_explains_itself_with_an_example_that_parses():
    import shlex

    from orchestrator.cli import EXAMPLES, build_parser, commands

    parser = build_parser()
    found = {path: child for path, child, _ in commands(parser)}
    assert set(found) == set(EXAMPLES), set(found) ^ set(EXAMPLES)
    for path, child in found.items():
        assert child.description and child.epilog and EXAMPLES[path] in child.epilog, path
        argv = shlex.split(EXAMPLES[path])[1:]
        assert argv[: len(path.split())] == path.split(), path
        assert getattr(parser.parse_args(argv), "func", None) is not None, path
