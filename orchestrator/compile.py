"""Compile the Solidity contracts offline and write their committed artifacts.

Why this shape:
- ``solcx.compile_standard`` with standard-JSON input: the one py-solc-x entry point that works
  both with a native ``solc`` and with the project's solc-js wrapper (``scripts/solc``);
  ``compile_source``/``compile_files`` need ``--combined-json``, which the wrapper lacks.
- A native ``solc`` on PATH is preferred when it is exactly :data:`SOLC_VERSION` (faster, and
  what a user with foundry or a distro package has); otherwise ``scripts/solc`` on top of the
  pinned npm ``solc``. Both produce the same bytecode for the same input.
- ``evmVersion`` is pinned to prague: solc 0.8.37 defaults to osaka, which py-evm (the embedded
  chain) cannot run; prague runs on eth-tester and anvil alike.
- Sources are passed by content, so the compiler reads no files and the sha256 recorded in each
  artifact is exactly of what was compiled. That includes the OpenZeppelin Contracts files the
  sources import (``@openzeppelin/contracts/...``, pinned in package.json, read from
  ``node_modules``): only the ones imported, directly or through each other, each under its
  import path as the unit name, so the imports resolve without reading the file system and
  without a remapping (forge and slither, which read files, remap ``@openzeppelin/contracts/``
  to ``node_modules/@openzeppelin/contracts/``: contracts/foundry.toml, contracts/remappings.txt).

Each artifact ``contracts/build/<Name>.json`` holds the ABI, creation and runtime bytecode, the
method identifiers, the compiler version and settings, and the sha256 of every source file the
contract was compiled from (taken from the compiler's metadata), so :mod:`splitseal.chain.artifacts`
can tell cheaply whether an artifact is stale.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitseal.chain.artifacts import (
    BUILD_DIR,
    CONTRACTS,
    NODE_MODULES,
    SOURCES_DIR,
    library_sources,
    sha256_hex,
    source_files,
)
from splitseal.config import PROJECT_ROOT
from splitseal.errors import CompilationError

log = logging.getLogger(__name__)

#: The compiler version every artifact is built with (pinned in package.json as well).
SOLC_VERSION = "0.8.37"
EVM_VERSION = "prague"
#: Optimizer runs: tuned for execution cost (the request lifecycle has a gas budget) over size.
OPTIMIZER_RUNS = 10_000
VIA_IR = False

WRAPPER = PROJECT_ROOT / "scripts" / "solc"

ARTIFACT_FORMAT = "splitseal-artifact-1"


@dataclass(frozen=True)
class Compiler:
    """A solc executable that py-solc-x can drive, and its full version string."""

    path: Path
    version: str  # e.g. "0.8.37+commit.f401782d"
    native: bool




def find_compiler() -> Compiler:
    """The native ``solc`` if it is exactly :data:`SOLC_VERSION`, else ``scripts/solc``."""
    native = shutil.which("solc")
    if native:
        version = _version_of(Path(native))
        if version and version.split("+")[0] == SOLC_VERSION:
            return Compiler(Path(native), version, native=True)
        log.info("native solc at %s is %s, not %s; using the solc-js wrapper", native, version, SOLC_VERSION)
    if shutil.which("node") is None:
        raise CompilationError(
            f"no solc {SOLC_VERSION} found: install node.js (for the pinned solc-js) and run scripts/setup, "
            f"or put a native solc {SOLC_VERSION} on PATH")
    version = _version_of(WRAPPER)
    if not version:
        raise CompilationError(f"{WRAPPER} did not report a version; run scripts/setup to install solc-js")
    if version.split("+")[0] != SOLC_VERSION:
        raise CompilationError(f"node_modules/solc is {version}, expected {SOLC_VERSION}; run scripts/setup")
    return Compiler(WRAPPER, version, native=False)


def _version_of(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Version:"):
            full = line.split(":", 1)[1].strip()
            # "0.8.37+commit.f401782d.Linux.g++" / ".Emscripten.clang": keep version+commit only.
            parts = full.split(".")
            return ".".join(parts[:4]) if len(parts) >= 4 else full
    return None


def standard_input(sources: dict[str, bytes]) -> dict[str, Any]:
    """The standard-JSON compiler input for ``sources`` (unit name -> file bytes)."""
    return {
        "language": "Solidity",
        "sources": {name: {"content": data.decode("utf-8")} for name, data in sorted(sources.items())},
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "viaIR": VIA_IR,
            "outputSelection": {
                "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object",
                            "evm.deployedBytecode.immutableReferences", "evm.methodIdentifiers", "metadata"]},
            },
        },
    }


def analysis_input(sources_dir: Path = SOURCES_DIR, node_modules: Path = NODE_MODULES) -> dict[str, Any]:
    """The standard-JSON input :func:`compile_contracts` compiles, with every unit's AST and the
    full bytecode output selected: what a static analyser (Slither, scripts/slither_findings.py)
    needs to see exactly the sources and settings the artifacts are built from."""
    compiler_input = standard_input(_all_sources(sources_dir, node_modules))
    compiler_input["settings"]["outputSelection"] = {
        "*": {"*": ["abi", "metadata", "devdoc", "userdoc", "evm.bytecode", "evm.deployedBytecode"], "": ["ast"]},
    }
    return compiler_input


def _all_sources(sources_dir: Path, node_modules: Path) -> dict[str, bytes]:
    """Every project source and the library files they import (unit name -> bytes)."""
    files = source_files(sources_dir)
    if not files:
        raise CompilationError(f"no Solidity sources under {sources_dir}")
    sources = {name: path.read_bytes() for name, path in files.items()}
    sources.update(library_sources(sources, node_modules))
    return sources


def compile_contracts(sources_dir: Path = SOURCES_DIR, compiler: Compiler | None = None,
                      node_modules: Path = NODE_MODULES) -> dict[str, dict[str, Any]]:
    """Compile every source (and the library files they import, from ``node_modules``) and
    return the artifacts of :data:`CONTRACTS` (not written)."""
    import solcx  # imported here: only compilation needs it

    compiler = compiler or find_compiler()
    sources = _all_sources(sources_dir, node_modules)
    hashes = {name: sha256_hex(data) for name, data in sources.items()}
    log.info("compiling %d sources with solc %s (%s)", len(sources), compiler.version,
             "native" if compiler.native else "solc-js")
    try:
        output = solcx.compile_standard(standard_input(sources), solc_binary=compiler.path)
    except solcx.exceptions.SolcError as exc:
        raise CompilationError(f"solc failed:\n{_solc_message(exc)}") from None
    for err in output.get("errors", []):
        if err.get("severity") == "warning":
            log.warning("solc: %s", err.get("formattedMessage", err.get("message", "")).strip())

    by_name: dict[str, tuple[str, dict[str, Any]]] = {}
    for unit, contracts in output.get("contracts", {}).items():
        for name, data in contracts.items():
            by_name[name] = (unit, data)
    artifacts: dict[str, dict[str, Any]] = {}
    for name in CONTRACTS:
        if name not in by_name:
            raise CompilationError(f"contract {name} not found in the compiler output; "
                                   f"expected it in contracts/src/{name}.sol")
        unit, data = by_name[name]
        used = sorted(json.loads(data["metadata"])["sources"])
        artifacts[name] = {
            "format": ARTIFACT_FORMAT,
            "contractName": name,
            "sourceName": unit,
            "abi": data["abi"],
            "bytecode": "0x" + data["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + data["evm"]["deployedBytecode"]["object"],
            # byte ranges of the runtime code that the constructor fills (immutables): masked when
            # an auditor compares on-chain code with this artifact
            "immutableReferences": sorted(
                [int(r["start"]), int(r["length"])]
                for refs in data["evm"]["deployedBytecode"].get("immutableReferences", {}).values() for r in refs),
            "methodIdentifiers": data["evm"]["methodIdentifiers"],
            "compiler": {
                "version": compiler.version,
                "evmVersion": EVM_VERSION,
                "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
                "viaIR": VIA_IR,
            },
            "sources": {u: hashes[u] for u in used},
        }
    return artifacts


def render_artifact(artifact: dict[str, Any]) -> str:
    """The exact text written for an artifact (stable: sorted keys, fixed indentation)."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def write_artifacts(artifacts: dict[str, dict[str, Any]], build_dir: Path = BUILD_DIR) -> list[Path]:
    """Write the artifacts; returns the files whose content changed."""
    build_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, artifact in artifacts.items():
        path = build_dir / f"{name}.json"
        text = render_artifact(artifact)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def check_artifacts(artifacts: dict[str, dict[str, Any]], build_dir: Path = BUILD_DIR) -> list[str]:
    """Names of committed artifacts that differ from a fresh compilation (empty: all fresh)."""
    stale = []
    for name, artifact in artifacts.items():
        path = build_dir / f"{name}.json"
        if not path.exists() or path.read_text() != render_artifact(artifact):
            stale.append(name)
    return stale


def _solc_message(exc: Exception) -> str:
    """The compiler's own error messages, without py-solc-x's dump of the whole output."""
    messages = []
    for err in getattr(exc, "error_dict", None) or []:
        if isinstance(err, dict) and err.get("severity") == "error":
            messages.append(err.get("formattedMessage", err.get("message", "")).strip())
    if not messages:
        messages = [getattr(exc, "message", None) or str(exc).split("\n> command", 1)[0]]
    text = "\n".join(messages)
    return text if len(text) < 8000 else text[:8000] + "\n..."
