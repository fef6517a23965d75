"""Run Slither's detectors on the contracts and print the findings as one JSON document.

Run by the Slither venv (``.venv/slither/bin/python scripts/slither_findings.py INPUT``, set up by
scripts/setup; tests/integration/test_slither.py does it), not by the project's venv: Slither
pins its own web3 and eth-* packages.

INPUT is the standard-JSON compiler input of ``splitseal compile`` with ASTs selected
(``orchestrator.compile.analysis_input``), so Slither sees exactly the sources the deployed
bytecode is built from. Why not ``slither .`` in contracts/: crytic-compile then drives forge,
whose build names each OpenZeppelin file twice (``../node_modules/...`` through the remapping,
an absolute path through OpenZeppelin's relative imports); Slither takes the two copies for
different contracts, reports "Missing inheritance" and silently skips the bodies of every
contract that inherits them. Handing crytic-compile a platform object instead of a path also
keeps it from looking for a framework (foundry.toml) and rewriting the compiler settings.

Findings whose every element lies in node_modules (OpenZeppelin Contracts, pinned) are left out:
they are upstream code (contracts/slither.triage.json says why). Each finding names its first
element as ``Contract.function(args)`` or ``Contract.variable``, a key that survives line moves.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from crytic_compile import CryticCompile
from crytic_compile.platform.solc_standard_json import SolcStandardJson
from slither import Slither
from slither.detectors import all_detectors
from slither.detectors.abstract_detector import AbstractDetector

ROOT = Path(__file__).resolve().parents[1]


def element_key(element: dict[str, Any]) -> str:
    """``Contract.function(args)``, ``Contract.function(args).variable``, ``Contract`` ..."""
    fields = element.get("type_specific_fields", {})
    own = fields.get("signature") or element.get("name", "?")
    parent = fields.get("parent")
    if parent and element.get("type") != "node":
        return f"{element_key(parent)}.{own}"
    if parent:  # a statement: name its function, not the statement's text
        return element_key(parent)
    return own


def in_node_modules(path: str) -> bool:
    return "node_modules" in Path(path).parts


def in_dependency(element: dict[str, Any]) -> bool:
    return in_node_modules(element.get("source_mapping", {}).get("filename_absolute", ""))


def analyse(input_path: Path, solc: Path, contracts_dir: Path) -> dict[str, Any]:
    """``findings`` (sorted) and ``implemented``: per contract of contracts/src, the names of the
    external/public functions Slither parsed a body for and of its public variables (so a test can
    check that Slither really analysed every function of the ABI)."""
    compilation = CryticCompile(SolcStandardJson(str(input_path)), solc=str(solc), cwd=str(contracts_dir),
                                solc_working_dir=str(contracts_dir))
    slither = Slither(compilation)
    for _, detector in inspect.getmembers(all_detectors, inspect.isclass):
        if issubclass(detector, AbstractDetector):
            slither.register_detector(detector)
    out = []
    for result in (r for per_detector in slither.run_detectors() for r in per_detector):
        elements = result.get("elements", [])
        if elements and all(in_dependency(e) for e in elements):
            continue
        first = elements[0] if elements else {}
        mapping = first.get("source_mapping", {})
        absolute = mapping.get("filename_absolute")
        out.append({
            "check": result["check"],
            "impact": result["impact"],
            "confidence": result["confidence"],
            "element": element_key(first) if first else "",
            "file": os.path.relpath(absolute, contracts_dir.parent) if absolute else "",
            "lines": [min(mapping["lines"]), max(mapping["lines"])] if mapping.get("lines") else [],
            "description": result["description"].strip(),
        })
    implemented = {
        contract.name: sorted({f.name for f in contract.functions if f.is_implemented
                               and f.visibility in ("external", "public")}
                              | {v.name for v in contract.state_variables if v.visibility == "public"})
        for contract in slither.contracts
        if not in_node_modules(str(contract.source_mapping.filename.absolute))
    }
    return {"findings": sorted(out, key=lambda f: (f["impact"], f["check"], f["element"])), "implemented": implemented}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("input", type=Path, help="standard-JSON compiler input with ASTs selected")
    parser.add_argument("--solc", type=Path, default=ROOT / "scripts" / "solc")
    parser.add_argument("--contracts-dir", type=Path, default=ROOT / "contracts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    json.dump(analyse(args.input, args.solc, args.contracts_dir.resolve()), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
