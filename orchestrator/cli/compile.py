"""``splitseal compile [--check]``: build the contract artifacts, or check they are current."""

from __future__ import annotations

import argparse
import logging

from splitseal.config import Config
from splitseal.errors import CompilationError

from .output import emit

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compile", help="compile contracts/src into contracts/build (offline, pinned solc 0.8.37)",
        description="Compile the Solidity contracts with solc 0.8.37 (a native solc on PATH if it "
                    "is that version, else the pinned solc-js) and write contracts/build/<Name>.json.")
    parser.add_argument("--check", action="store_true",
                        help="compile in memory and fail if the committed artifacts differ; write nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.compile import BUILD_DIR, check_artifacts, compile_contracts, find_compiler, write_artifacts

    compiler = find_compiler()
    artifacts = compile_contracts(compiler=compiler)
    kind = "native solc" if compiler.native else "solc-js"
    if args.check:
        stale = check_artifacts(artifacts)
        if stale:
            raise CompilationError(f"committed artifacts differ from a fresh compilation: {', '.join(stale)}; "
                                   f"run `splitseal compile` and commit contracts/build")
        emit(args, {"contracts": sorted(artifacts), "solc": compiler.version, "compiler": kind,
                    "checked": True, "changed": []},
             f"contracts/build is up to date ({len(artifacts)} contracts, solc {compiler.version}, {kind})")
        return 0
    changed = write_artifacts(artifacts)
    emit(args, {"contracts": sorted(artifacts), "solc": compiler.version, "compiler": kind,
                "checked": False, "changed": sorted(c.name for c in changed)},
         f"compiled {len(artifacts)} contracts with solc {compiler.version} ({kind}); "
         f"{len(changed)} artifact(s) changed in {BUILD_DIR.relative_to(BUILD_DIR.parent.parent)}")
    return 0
