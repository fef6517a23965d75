"""Every command, driven with bad input, answers with one clear line and its documented exit
status, never a traceback; under ``--json`` the same failure is an ``{"error": ...}`` document.

Cases that need no chain run in-process (``orchestrator.cli.main``: an uncaught exception would
fail the test); the ones that need a live deployment run against one anvil with our contracts.
A few run as subprocesses too, to check what a user sees on the terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli import EXIT_RUNTIME, EXIT_USAGE, main
from splitseal.config import PROJECT_ROOT

pytestmark = pytest.mark.e2e

MODEL = str(PROJECT_ROOT / "models" / "digits_classifier.onnx")
RULE = str(PROJECT_ROOT / "rules" / "digits_classifier.toml")
DEAD_URL = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.fixture()
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Bad inputs of every kind, and a config whose home is the test's directory."""
    for name in [k for k in os.environ if k.startswith("SPLITSEAL_") or k == "ETH_RPC_URL"]:
        monkeypatch.delenv(name)
    good = (np.add.outer(np.arange(8), np.arange(8)) * 16).astype(np.uint8)
    Image.fromarray(good).save(tmp_path / "good.png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    (tmp_path / "corrupt.png").write_bytes((tmp_path / "noise.png").read_bytes()[:400])  # cut in its pixels
    Image.fromarray(good).save(tmp_path / "anim.gif")
    np.save(tmp_path / "strings.npy", np.array(["a", "b", "c"]))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "nan.npy", np.full((1, 16, 16), np.nan, np.float32))
    np.save(tmp_path / "wrong_shape.npy", np.zeros((3, 5), np.float32))
    (tmp_path / "not.npy").write_text("not an array")
    (tmp_path / "not.onnx").write_bytes(b"\x00garbage")
    (tmp_path / "bad.toml").write_text("[rule\nsplit =")
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "bad_deployment.json").write_text("{not json")
    (tmp_path / "keystore.json").write_text('{"not": "a keystore"}')
    (tmp_path / "password").write_text("secret\n")
    config = tmp_path / "splitseal.toml"
    config.write_text(f'home = "{tmp_path / "home"}"\n[enclave]\nsocket_path = "{tmp_path / "no.sock"}"\n')
    out = {p.name: str(p) for p in tmp_path.iterdir()}
    out.update(config=str(config), missing=str(tmp_path / "missing.npy"), tmp=str(tmp_path),
               nodir=str(tmp_path / "no" / "such" / "dir" / "x.npy"))
    return out


#: (argv, exit status, a fragment the message must contain). ``{name}`` is a file of the fixture.
NO_CHAIN_CASES = [
    # the command line itself
    (["infer", "--input", "{good.png}"], EXIT_USAGE, "--model"),
    (["mpc", "up", "--parties", "two"], EXIT_USAGE, "invalid int value"),
    (["no-such-command"], EXIT_USAGE, "invalid choice"),
    # configuration
    (["--config", "{bad.toml}", "chain", "status"], EXIT_USAGE, "bad.toml"),
    (["--config", "{tmp}", "chain", "status"], EXIT_USAGE, "Is a directory"),
    (["--config", "{missing}", "chain", "status"], EXIT_USAGE, "missing.npy"),
    # inputs of `infer`, refused before any chain is contacted
    (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{missing}"], EXIT_USAGE, "does not exist"),
    (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{strings.npy}"], EXIT_USAGE, "not numeric"),
    (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{objects.npy}"], EXIT_USAGE, "not a readable .npy"),
    (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{nan.npy}"], EXIT_USAGE, "finite"),
    (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{not.npy}"], EXIT_USAGE, "not a readable .npy"),
    (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{corrupt.png}", "--shape", "1,16,16"],
     EXIT_USAGE, "not a readable png"),
    (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{anim.gif}", "--shape", "1,16,16"],
     EXIT_USAGE, "not a PNG, JPEG or PGM"),
    (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{good.png}"], EXIT_USAGE, "--shape C,H,W"),
    (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{good.png}", "--shape", "1,x,8"],
     EXIT_USAGE, "three positive integers"),
    (["infer", "--chain", "mainnet", "--model", "m", "--input", "{wrong_shape.npy}"], EXIT_USAGE, "unknown chain"),
    (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{wrong_shape.npy}"], EXIT_RUNTIME,
     "cannot reach the chain"),
    # models
    (["model", "split", "{missing}", "--rule", RULE, "--out", "{tmp}/s"], EXIT_USAGE, "missing.npy"),
    (["model", "split", "{not.onnx}", "--rule", RULE, "--out", "{tmp}/s"], EXIT_USAGE, "not.onnx"),
    (["model", "split", MODEL, "--rule", "{bad.toml}", "--out", "{tmp}/s"], EXIT_USAGE, "bad.toml"),
    (["model", "split", MODEL, "--rule", "{empty.toml}", "--out", "{tmp}/s"], EXIT_USAGE, "empty.toml"),
    (["model", "split", MODEL, "--rule", "{missing}", "--out", "{tmp}/s"], EXIT_USAGE, "missing.npy"),
    (["model", "split", MODEL, "--rule", RULE, "--out", "{tmp}/s", "--inputs", "{strings.npy}"],
     EXIT_USAGE, "not numeric"),
    (["model", "split", MODEL, "--rule", RULE, "--out", "{tmp}/s", "--inputs", "{wrong_shape.npy}"],
     EXIT_USAGE, "shape"),
    (["model", "split", MODEL, "--rule", RULE, "--out", "{tmp}/s", "--random", "0"], EXIT_USAGE, "--random"),
    (["model", "split", "{tmp}", "--rule", RULE, "--out", "{tmp}/s"], EXIT_USAGE, "Is a directory"),
    (["model", "split", MODEL, "--rule", "{tmp}", "--out", "{tmp}/s"], EXIT_USAGE, "Is a directory"),
    (["model", "split", MODEL, "--rule", RULE, "--out", "{good.png}/s", "--random", "2"], EXIT_USAGE, "good.png"),
    (["model", "inspect", "{not.onnx}"], EXIT_USAGE, "not.onnx"),
    (["model", "inspect", "{missing}"], EXIT_USAGE, "missing.npy"),
    (["model", "example-input", "{not.onnx}", "--out", "{tmp}/x.npy"], EXIT_USAGE, "not.onnx"),
    (["model", "example-input", MODEL, "--out", "{nodir}"], EXIT_USAGE, "cannot write"),
    (["model", "example-input", MODEL, "--out", "{tmp}/x.npy", "--index", "-1"], EXIT_USAGE, "--index"),
    (["model", "train", "--max-iters", "0"], EXIT_USAGE, "--max-iters"),
    (["model", "train", "--model", "digits_classifier", "--out", "{good.png}"], EXIT_USAGE, "good.png"),
    (["model", "provision", "{tmp}", "--model-id", "m", "--chain", DEAD_URL], EXIT_USAGE, "not a split directory"),
    (["model", "provision", "{missing}", "--model-id", "m"], EXIT_USAGE, "not a split directory"),
    # the enclave
    (["enclave", "status"], EXIT_RUNTIME, "no.sock"),
    (["enclave", "attest", "--expect-measurement", "zz", "--chain", DEAD_URL], EXIT_USAGE, "hex"),
    (["enclave", "attest", "--expect-measurement", "0x1234", "--chain", DEAD_URL], EXIT_USAGE, "32 bytes"),
    (["audit", "enclave", "0x" + "11" * 20, "--socket", "{tmp}/none.sock", "--chain", DEAD_URL],
     EXIT_RUNTIME, "none.sock"),
    # MPC
    (["mpc", "up", "--model", "{missing}"], EXIT_USAGE, "not found"),
    (["mpc", "up", "--model", "{not.onnx}"], EXIT_USAGE, "not.onnx"),
    (["mpc", "up", "--parties", "9", "--random", "small"], EXIT_USAGE, "2 to 4 nodes"),
    (["mpc", "example-image", "--digit", "12", "--out", "{tmp}/a.png"], EXIT_USAGE, "--digit"),
    (["mpc", "example-image", "--digit", "1", "--out", "{nodir}"], EXIT_USAGE, "cannot write"),
    (["mpc", "example-image", "--face", "s41", "--out", "{tmp}/a.png"], EXIT_USAGE, "s1..s40"),
    (["mpc", "example-image", "--face", "s1", "--index", "11", "--out", "{tmp}/a.png"], EXIT_USAGE, "photos 1..10"),
    (["mpc", "example-image", "--face", "s1", "--digit", "1", "--out", "{tmp}/a.png"], EXIT_USAGE, "not allowed"),
    (["mpc", "up", "--random", "small", "--capture", "camera"], EXIT_USAGE, "unknown capture kind"),
    (["mpc", "enroll", "--subject", "alice", "{missing}"], EXIT_USAGE, "does not exist"),
    (["mpc", "enroll", "--subject", "alice", "{corrupt.png}"], EXIT_USAGE, "not a readable png"),
    (["mpc", "enroll", "--subject", "alice", "{strings.npy}"], EXIT_USAGE, "not numeric"),
    (["mpc", "verify", "--subject", "alice", "{anim.gif}"], EXIT_USAGE, "not a PNG, JPEG or PGM"),
    (["mpc", "identify", "{good.png}"], EXIT_USAGE, "no MPC cluster"),
    (["mpc", "status"], EXIT_USAGE, "no MPC cluster"),
    (["mpc", "infer", "--model", "digits-hybrid", "{good.png}"], EXIT_USAGE, "no MPC cluster"),
    (["mpc", "infer", "--model", "digits-hybrid", "{missing}"], EXIT_USAGE, "does not exist"),
    (["mpc", "audit", "alice"], EXIT_USAGE, "no MPC cluster"),
    (["mpc", "node", "run", "--party", "0", "--state-dir", "{tmp}/nothing"], EXIT_USAGE, "no MPC cluster"),
    (["mpc", "node", "run"], EXIT_USAGE, "--party"),
    # chains and deployments
    (["deploy", "--chain", DEAD_URL], EXIT_RUNTIME, "cannot reach the chain"),
    (["deploy", "--chain", "ftp://example.org"], EXIT_USAGE, "unknown chain"),
    (["audit", "request", "1", "--chain", DEAD_URL], EXIT_RUNTIME, "cannot reach the chain"),
    (["node", "run", "--chain", "embedded", "--backbone", "{tmp}"], EXIT_USAGE, "embedded chain"),
    (["node", "keeper", "--chain", DEAD_URL, "--once"], EXIT_RUNTIME, "cannot reach the chain"),
    (["demo", "--requests", "0"], EXIT_USAGE, "--requests"),
]


def _argv(case: list[str], files: dict[str, str]) -> list[str]:
    argv = []
    for arg in case:
        for name, path in files.items():
            arg = arg.replace("{" + name + "}", path)
        argv.append(arg)
    if argv[:1] != ["--config"]:
        argv = ["--config", files["config"], *argv]
    return argv


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        status = int(exc.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("case, status, says", NO_CHAIN_CASES, ids=[f"{i}-{c[0][0]}" for i, c in enumerate(NO_CHAIN_CASES)])
def test_bad_input_gets_a_clear_message_and_its_exit_status(files, capsys, case, status, says):
    got, out, err = _run(_argv(case, files), capsys)
    assert got == status, f"exit {got}, expected {status}:\n{out}\n{err}"
    assert "Traceback" not in out + err
    # the CLI's line ("error: ..." or argparse's "splitseal CMD: error: ..."), not log records
    error_lines = [line for line in err.splitlines() if line.startswith(("error:", "splitseal"))]
    assert len(error_lines) == 1 and "error:" in error_lines[0] and says in error_lines[0], err
    # the same failure under --json: one document on stdout that names it
    got, out, err = _run([*_argv(case, files), "--json"], capsys)
    assert got == status, f"--json: exit {got}, expected {status}:\n{out}\n{err}"
    doc = json.loads(out)
    assert set(doc) == {"error"} and doc["error"]["exit"] == status and says in doc["error"]["message"], doc


def test_bad_keys_are_refused_clearly(files, capsys, monkeypatch):
    """A private key that is not 32 bytes of hex, a keystore that is not one, a wrong password."""
    cases = [
        ({"SPLITSEAL_CHAIN_ADMIN_KEY": "0xnothex"}, "admin_key"),
        ({"SPLITSEAL_CHAIN_ADMIN_KEY": "0x1234"}, "admin_key"),
        ({"SPLITSEAL_CHAIN_ADMIN_KEYSTORE": files["keystore.json"],
          "SPLITSEAL_CHAIN_KEYSTORE_PASSWORD_FILE": files["password"]}, "keystore"),
        ({"SPLITSEAL_CHAIN_ADMIN_KEYSTORE": files["missing"]}, "missing.npy"),
    ]
    for env, says in cases:
        with monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            got, out, err = _run(_argv(["deploy", "--chain", DEAD_URL], files), capsys)
        assert got == EXIT_USAGE and "Traceback" not in err and says in err, (env, err)


def test_a_user_sees_one_line_on_the_terminal(files):
    """As a subprocess: the whole stderr is the one error line (no traceback, no log noise)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSEAL_")}
    for case in (["infer", "--chain", DEAD_URL, "--model", "m", "--input", "{strings.npy}"],
                 ["mpc", "enroll", "--subject", "a", "{corrupt.png}"]):
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *_argv(case, files)], env=env,
                              capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
        assert proc.returncode == EXIT_USAGE and proc.stdout == "", proc
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


# --- against a live deployment -------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One anvil with our contracts deployed (the record under a private home)."""
    from tests.e2e.test_inference_cli import _start_anvil

    tmp = tmp_path_factory.mktemp("live")
    anvil, url, chain_id = _start_anvil(tmp / "anvil.log")
    home = tmp / "home"
    config = tmp / "splitseal.toml"
    config.write_text(f'home = "{home}"\n[enclave]\nsocket_path = "{tmp / "no.sock"}"\n')
    try:
        assert main(["--config", str(config), "deploy", "--chain", url]) == 0
        yield {"url": url, "config": str(config), "record": str(home / "deployments" / f"{chain_id}.json")}
    finally:
        anvil.terminate()
        anvil.wait(10)


LIVE_CASES = [
    (["audit", "request", "999"], EXIT_USAGE, "request 999"),
    (["audit", "request", "-1"], EXIT_USAGE, "request"),
    (["audit", "model", "no-such-model"], EXIT_USAGE, "not registered"),
    (["audit", "model", "0x" + "zz" * 32], EXIT_USAGE, "hex"),
    (["audit", "subject", "0x" + "zz" * 32], EXIT_USAGE, "not hex"),
    (["audit", "request", "1", "--registry", "0xnotanaddress"], EXIT_USAGE, "not an address"),
    (["audit", "request", "1", "--registry", "0x" + "12" * 20], EXIT_USAGE, "ModelRegistry"),
    (["audit", "request", "1", "--deployment", "{bad_deployment.json}"], EXIT_USAGE, "bad_deployment.json"),
    (["audit", "request", "1", "--deployment", "{missing}"], EXIT_USAGE, "missing.npy"),
    (["infer", "--model", "no-such-model", "--input", "{wrong_shape.npy}"], EXIT_USAGE, "not registered"),
    (["enclave", "attest"], EXIT_RUNTIME, "no.sock"),
    (["node", "run", "--backbone", "{missing}"], EXIT_USAGE, "missing.npy"),
    (["audit", "request", "1", "--deployment", "{keystore.json}"], EXIT_USAGE, "not a deployment record"),
    (["node", "run", "--backbone", "{not.onnx}", "--input-key", "{missing}"], EXIT_USAGE, "--input-key"),
]


@pytest.mark.integration
@pytest.mark.parametrize("case, status, says", LIVE_CASES, ids=[f"{i}-{c[0][0]}" for i, c in enumerate(LIVE_CASES)])
def test_bad_input_against_a_live_deployment(live, files, capsys, case, status, says):
    argv = ["--config", live["config"], *_argv(case, files)[2:], "--chain", live["url"]]
    got, out, err = _run(argv, capsys)
    assert got == status, f"exit {got}, expected {status}:\n{out}\n{err}"
    assert "Traceback" not in out + err
    if says is not None:
        assert says in err, err
    got, out, err = _run([*argv, "--json"], capsys)
    doc = json.loads(out)
    assert got == status and (says is None or says in doc["error"]["message"]), (got, doc)
