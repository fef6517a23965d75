"""Committed contract artifacts: present, complete, built with the pinned settings, and fresh
(a test fails when a contract source changes and ``splitseal compile`` was not run)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from orchestrator import compile as compile_mod
from splitseal.chain import artifacts
from splitseal.errors import CompilationError

ROOT = Path(__file__).resolve().parents[2]


def test_every_contract_has_a_complete_artifact() -> None:
    loaded = artifacts.all_artifacts()
    assert list(loaded) == list(compile_mod.CONTRACTS)
    for name, artifact in loaded.items():
        assert artifact["contractName"] == name
        assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 1000
        assert artifact["deployedBytecode"].startswith("0x") and len(artifact["deployedBytecode"]) > 1000
        assert any(item["type"] == "function" for item in artifact["abi"])
        assert artifact["compiler"]["version"].startswith(compile_mod.SOLC_VERSION + "+commit.")
        assert artifact["compiler"]["evmVersion"] == "prague"
        assert artifact["compiler"]["optimizer"]["enabled"] is True
        assert f"src/{name}.sol" in artifact["sources"]
        # EIP-170: deployable on any chain.
        assert (len(artifact["deployedBytecode"]) - 2) // 2 <= 24576


def test_artifacts_match_the_sources_on_disk() -> None:
    """Fails when a .sol file changed and its artifact was not regenerated."""
    assert artifacts.stale_artifacts() == {}
    artifacts.check_fresh()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of contracts/ to break on purpose (beside a copy of the OpenZeppelin sources)."""
    shutil.copytree(ROOT / "contracts", tmp_path / "contracts", ignore=shutil.ignore_patterns("cache", "out"))
    shutil.copytree(ROOT / "node_modules" / "@openzeppelin", tmp_path / "node_modules" / "@openzeppelin")
    return tmp_path / "contracts"


def test_a_changed_source_makes_its_artifacts_stale(tree: Path) -> None:
    lib = tree / "src" / "lib" / "Signatures.sol"
    lib.write_text(lib.read_text() + "\n// edited\n")
    stale = artifacts.stale_artifacts(tree / "build", tree)
    users = {n for n in compile_mod.CONTRACTS if "src/lib/Signatures.sol" in artifacts.load_artifact(n)["sources"]}
    assert set(stale) == users and users
    assert all(reasons == ["src/lib/Signatures.sol changed"] for reasons in stale.values())
    with pytest.raises(CompilationError, match="splitseal compile"):
        artifacts.check_fresh(tree / "build", tree)


OZ_ECDSA = "@openzeppelin/contracts/utils/cryptography/ECDSA.sol"


def test_openzeppelin_sources_are_compiled_in_and_checked(tree: Path) -> None:
    """The imported OpenZeppelin files are recorded like the project's own: a different
    OpenZeppelin (edited, or missing from node_modules) makes their users stale."""
    users = {n for n in compile_mod.CONTRACTS if OZ_ECDSA in artifacts.load_artifact(n)["sources"]}
    # BackboneExecution deploys its EnclaveTransfer, so it compiles in EnclaveTransfer's sources too
    assert users == {"ModelRegistry", "ParameterIndex", "BackboneExecution", "EnclaveTransfer", "FeatureShareRegistry"}
    ecdsa = tree.parent / "node_modules" / OZ_ECDSA
    original = ecdsa.read_bytes()
    ecdsa.write_bytes(original + b"\n// edited\n")
    stale = artifacts.stale_artifacts(tree / "build", tree)
    assert set(stale) == users and all(reasons == [f"{OZ_ECDSA} changed"] for reasons in stale.values())
    ecdsa.unlink()
    stale = artifacts.stale_artifacts(tree / "build", tree)
    assert set(stale) == users
    assert all(reasons == [f"{OZ_ECDSA} is not installed (run scripts/setup)"] for reasons in stale.values())
    ecdsa.write_bytes(original)
    assert artifacts.stale_artifacts(tree / "build", tree) == {}


def test_library_sources_are_the_import_closure(tree: Path) -> None:
    sources = {"src/A.sol": b'import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";\n'}
    found = artifacts.library_sources(sources, tree.parent / "node_modules")
    assert OZ_ECDSA in found and "src/A.sol" not in found
    assert all(unit.startswith("@openzeppelin/contracts/") for unit in found)
    assert "@openzeppelin/contracts/access/AccessControl.sol" not in found  # only what is imported
    with pytest.raises(CompilationError, match="scripts/setup"):
        artifacts.library_sources(sources, tree.parent / "nowhere")


def test_removed_and_new_sources_are_noticed(tree: Path) -> None:
    (tree / "src" / "FeatureShareRegistry.sol").unlink()
    assert artifacts.stale_artifacts(tree / "build", tree) == {
        "FeatureShareRegistry": ["src/FeatureShareRegistry.sol was removed"]}
    (tree / "src" / "FeatureShareRegistry.sol").write_text((ROOT / "contracts/src/FeatureShareRegistry.sol").read_text())
    (tree / "src" / "Extra.sol").write_text("// SPDX-License-Identifier: Apache-2.0\npragma solidity 0.8.37;\n")
    stale = artifacts.stale_artifacts(tree / "build", tree)
    assert set(stale) == set(compile_mod.CONTRACTS)
    assert "src/Extra.sol" in stale["ModelRegistry"][0]


def test_missing_artifact_is_a_compilation_error(tree: Path) -> None:
    (tree / "build" / "ParameterIndex.json").unlink()
    with pytest.raises(CompilationError, match="no artifact for contract 'ParameterIndex'"):
        artifacts.load_artifact("ParameterIndex", tree / "build")
    assert "ParameterIndex" in artifacts.stale_artifacts(tree / "build", tree)


def test_load_artifact_sees_a_rewritten_file(tree: Path) -> None:
    path = tree / "build" / "EnclaveTransfer.json"
    first = artifacts.load_artifact("EnclaveTransfer", tree / "build")
    data = json.loads(path.read_text())
    data["abi"] = []
    path.write_text(json.dumps(data))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert artifacts.load_artifact("EnclaveTransfer", tree / "build")["abi"] == [] != first["abi"]


def test_standard_input_pins_prague_and_the_optimizer() -> None:
    settings = compile_mod.standard_input({"src/A.sol": b"x"})["settings"]
    assert settings["evmVersion"] == "prague"
    assert settings["optimizer"] == {"enabled": True, "runs": compile_mod.OPTIMIZER_RUNS}


def _fake_solc(directory: Path, version: str) -> None:
    directory.mkdir()
    script = directory / "solc"
    script.write_text(f"#!/bin/sh\necho 'solc, the solidity compiler commandline interface'\n"
                      f"echo 'Version: {version}.Linux.g++'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_native_solc_of_the_pinned_version_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_solc(tmp_path / "bin", "0.8.37+commit.f401782d")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    compiler = compile_mod.find_compiler()
    assert compiler.native and compiler.path == tmp_path / "bin" / "solc"
    assert compiler.version == "0.8.37+commit.f401782d"


def test_native_solc_of_another_version_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_solc(tmp_path / "bin", "0.8.20+commit.a1b79de6")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    compiler = compile_mod.find_compiler()
    assert not compiler.native and compiler.path == compile_mod.WRAPPER
    assert compiler.version.startswith("0.8.37+commit.")


def test_wrapper_prints_only_json_on_standard_json() -> None:
    """scripts/solc keeps solc-js's SMT notices off stdout, so py-solc-x can parse it."""
    source = "// SPDX-License-Identifier: Apache-2.0\npragma solidity 0.8.37;\ncontract A { function f() external pure returns (uint256) { return 1; } }\n"
    request = compile_mod.standard_input({"A.sol": source.encode()})
    out = subprocess.run([str(compile_mod.WRAPPER), "--standard-json"], input=json.dumps(request), text=True,
                         capture_output=True, check=True, timeout=120).stdout
    result = json.loads(out)
    assert "A" in result["contracts"]["A.sol"]
    assert not [e for e in result.get("errors", []) if e["severity"] == "error"]
    bad = subprocess.run([str(compile_mod.WRAPPER), "--combined-json", "abi"], text=True, capture_output=True)
    assert bad.returncode != 0 and "unrecognised option" in bad.stderr


def test_compiler_errors_are_reported_briefly(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Broken.sol").write_text("// SPDX-License-Identifier: Apache-2.0\npragma solidity 0.8.37;\n"
                                    "contract Broken { function f( }\n")
    with pytest.raises(CompilationError) as info:
        compile_mod.compile_contracts(src)
    message = str(info.value)
    assert "ParserError" in message and "src/Broken.sol" in message
    assert "> stdout" not in message  # not py-solc-x's dump of the whole compiler output
