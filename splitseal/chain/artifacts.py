"""The committed contract artifacts (``contracts/build/<Name>.json``) and their freshness.

Reading an artifact needs no compiler: everything that deploys or talks to the contracts goes
through :func:`load_artifact`. Freshness is checked without compiling, by comparing the sha256 of
every source an artifact records (from the compiler's metadata) with the files on disk, so a
test can fail cheaply when someone edits a contract and forgets ``splitseal compile``.

Library sources (OpenZeppelin Contracts, pinned in package.json) are compiled under their import
path as the source unit name (``@openzeppelin/contracts/access/AccessControl.sol``) and read from
``node_modules``; their sha256 is recorded and checked like the project's own, so a different
OpenZeppelin version makes the artifacts stale too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from splitseal.config import PROJECT_ROOT
from splitseal.errors import CompilationError

log = logging.getLogger(__name__)

CONTRACTS_DIR = PROJECT_ROOT / "contracts"
SOURCES_DIR = CONTRACTS_DIR / "src"
BUILD_DIR = CONTRACTS_DIR / "build"
NODE_MODULES = PROJECT_ROOT / "node_modules"

#: Import prefixes of the npm libraries the contracts may use, and their package directory
#: under node_modules. The prefix is also the source unit name's prefix.
LIBRARIES = {"@openzeppelin/contracts/": "@openzeppelin/contracts"}

_IMPORT = re.compile(r'^\s*import\s+(?:[^;"\']*?\s+from\s+)?["\']([^"\']+)["\']', re.MULTILINE)

#: The deployable contracts, in deployment order.
CONTRACTS = ("ModelRegistry", "ParameterIndex", "BackboneExecution", "EnclaveTransfer", "FeatureShareRegistry",
             "RoundTripFloor",  # benchmark floor only (scripts/bench_inference)
             "ResultConsumer")  # the example consumer of result callbacks (docs/PROTOCOL.md)

def source_files(sources_dir: Path = SOURCES_DIR) -> dict[str, Path]:
    """Every ``.sol`` file under ``contracts/src``, keyed by its source unit name.

    Source unit names are paths relative to ``contracts/`` (``src/ModelRegistry.sol``), which
    is how relative imports between the files resolve.
    """
    root = sources_dir.parent
    return {p.relative_to(root).as_posix(): p for p in sorted(sources_dir.rglob("*.sol"))}


def library_file(unit: str, node_modules: Path = NODE_MODULES) -> Path | None:
    """The file under ``node_modules`` of a library source unit, or None if ``unit`` is not one."""
    for prefix, package in LIBRARIES.items():
        if unit.startswith(prefix):
            return node_modules / package / unit[len(prefix):]
    return None


def _resolve_import(importer: str, path: str) -> str:
    """The source unit name an ``import "path"`` in unit ``importer`` refers to (solc's rules:
    paths starting with ./ or ../ are relative to the importer's directory)."""
    if not path.startswith(("./", "../")):
        return path
    parts = importer.split("/")[:-1]
    for part in path.split("/"):
        if part == "..":
            if not parts:
                raise CompilationError(f"import {path!r} in {importer} leaves the source tree")
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts)


def library_sources(sources: dict[str, bytes], node_modules: Path = NODE_MODULES) -> dict[str, bytes]:
    """Every library file that ``sources`` import, directly or through other library files
    (unit name -> bytes). Raises :class:`CompilationError` when one is not installed."""
    found: dict[str, bytes] = {}
    pending = list(sources.items())
    while pending:
        importer, data = pending.pop()
        for path in _IMPORT.findall(data.decode("utf-8")):
            unit = _resolve_import(importer, path)
            if unit in sources or unit in found:
                continue
            file = library_file(unit, node_modules)
            if file is None:
                continue  # a project file that does not exist: the compiler reports it
            try:
                found[unit] = file.read_bytes()
            except OSError:
                raise CompilationError(f"{unit} (imported by {importer}) is not installed at {file}; "
                                       f"run scripts/setup (npm packages from package-lock.json)") from None
            pending.append((unit, found[unit]))
    return dict(sorted(found.items()))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_cache: dict[Path, tuple[int, dict[str, Any]]] = {}


def artifact_path(name: str, build_dir: Path = BUILD_DIR) -> Path:
    """Where the artifact of contract ``name`` lives."""
    return build_dir / f"{name}.json"


def load_artifact(name: str, build_dir: Path = BUILD_DIR) -> dict[str, Any]:
    """The artifact of contract ``name``: at least ``abi``, ``bytecode`` (0x hex),
    ``deployedBytecode``, ``compiler`` and ``sources`` (unit name -> sha256).

    Cached per file modification time, so a recompilation in the same process is seen.
    Raises :class:`CompilationError` when the artifact is missing or unreadable.
    """
    path = artifact_path(name, build_dir)
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        known = ", ".join(CONTRACTS)
        raise CompilationError(f"no artifact for contract {name!r} at {path}; known contracts: {known}. "
                               f"Run `splitseal compile`.") from None
    cached = _cache.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    try:
        artifact = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CompilationError(f"artifact {path} is unreadable ({exc}); run `splitseal compile`") from None
    for key in ("abi", "bytecode", "sources"):
        if key not in artifact:
            raise CompilationError(f"artifact {path} has no {key!r}; run `splitseal compile`")
    _cache[path] = (mtime, artifact)
    return artifact


def all_artifacts(build_dir: Path = BUILD_DIR) -> dict[str, dict[str, Any]]:
    """Artifacts of every deployable contract, by name, in deployment order."""
    return {name: load_artifact(name, build_dir) for name in CONTRACTS}


def stale_artifacts(build_dir: Path = BUILD_DIR, contracts_dir: Path = CONTRACTS_DIR,
                    node_modules: Path | None = None) -> dict[str, list[str]]:
    """Contracts whose artifact does not match the sources on disk, with the reasons.

    An artifact is stale when it is missing, when a source it was compiled from changed or
    disappeared (a library file: changed or missing under ``node_modules``, which is
    ``contracts_dir``'s sibling unless given); and every artifact is reported when a ``.sol``
    file under ``contracts/src`` is recorded by none of them (a new source nobody compiled yet).
    """
    node_modules = node_modules if node_modules is not None else contracts_dir.parent / "node_modules"
    files = source_files(contracts_dir / "src")
    current = {unit: sha256_hex(path.read_bytes()) for unit, path in files.items()}
    library_units: set[str] = set()
    problems: dict[str, list[str]] = {}
    recorded_units: set[str] = set()
    for name in CONTRACTS:
        try:
            artifact = load_artifact(name, build_dir)
        except CompilationError as exc:
            problems[name] = [str(exc)]
            continue
        recorded_units.update(artifact["sources"])
        for unit, digest in sorted(artifact["sources"].items()):
            library = library_file(unit, node_modules)
            if library is not None and unit not in library_units:
                library_units.add(unit)
                if library.is_file():
                    current[unit] = sha256_hex(library.read_bytes())
            if unit not in current:
                if library is not None:
                    problems.setdefault(name, []).append(f"{unit} is not installed (run scripts/setup)")
                    continue
                problems.setdefault(name, []).append(f"{unit} was removed")
            elif current[unit] != digest:
                problems.setdefault(name, []).append(f"{unit} changed")
    unused = sorted(set(files) - recorded_units)
    if unused and not problems:
        for name in CONTRACTS:
            problems.setdefault(name, []).append(f"new source(s) not in any artifact: {', '.join(unused)}")
    return problems


def check_fresh(build_dir: Path = BUILD_DIR, contracts_dir: Path = CONTRACTS_DIR) -> None:
    """Raise :class:`CompilationError` naming every stale artifact; return when all are fresh."""
    problems = stale_artifacts(build_dir, contracts_dir)
    if problems:
        detail = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in problems.items())
        raise CompilationError(f"contract artifacts are out of date with contracts/src ({detail}). "
                               f"Run `splitseal compile` and commit contracts/build.")
