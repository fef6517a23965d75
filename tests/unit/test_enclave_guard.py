"""Architecture guard: the enclave (trusted computing base) imports no chain or host code."""

from __future__ import annotations

import ast
from pathlib import Path

import enclave

FORBIDDEN = ("web3", "eth_tester", "eth_account", "chain_node", "orchestrator", "onnx", "onnxruntime",
             "solcx", "pickle", "requests", "websockets")
ENCLAVE_DIR = Path(enclave.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
    return names


def test_enclave_imports_no_chain_or_host_code():
    files = sorted(ENCLAVE_DIR.glob("*.py"))
    assert len(files) >= 8  # crypto, identity, keys, sealing, core, server, ...
    offenders = {}
    for path in files:
        bad = {n for n in _imports(path) if n.split(".")[0] in FORBIDDEN}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}, f"enclave/ must stay free of chain/host code: {offenders}"


def test_guard_detects_a_forbidden_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom web3 import Web3\nimport importlib\nimportlib.import_module('splitseal.chain.client')\n")
    assert {"web3", "splitseal.chain.client"} <= _imports(probe)
