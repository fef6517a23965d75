"""The `splitseal` command line.

Each area registers its own sub-commands (``orchestrator/cli/<area>.py`` exposes
``register(subparsers)``); this module only loads configuration, dispatches and turns
:class:`SplitsealError` into a one-line message and a documented exit status (:data:`EPILOG`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from splitseal.config import load_config
from splitseal.errors import SplitsealError

# Areas whose modules register sub-commands, in the order they appear in --help.
_AREAS = ("compile", "chain", "model", "train", "enclave", "node", "mpc", "audit", "demo")


_GROUPS: dict[int, dict[str, argparse._SubParsersAction]] = {}


def group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """The sub-command group ``splitseal NAME ...``, created on first use.

    Several areas may add commands to one group (``model train`` and ``model provision``).
    """
    groups = _GROUPS.setdefault(id(sub), {})
    if name not in groups:
        parser = sub.add_parser(name, help=help)
        groups[name] = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    return groups[name]


#: Exit statuses of every command.
EXIT_OK = 0
EXIT_NEGATIVE = 1  # the command ran and the answer is "no": not verified, failed on-chain, refused
EXIT_USAGE = 2  # the command line, a configuration value or an input file is wrong: fix it and retry
EXIT_RUNTIME = 3  # something it needs failed: chain, enclave, node or MPC cluster unreachable or refusing

EPILOG = """exit status: 0 done; 1 a negative outcome (not verified, request failed, decision
rejected); 2 a usage or input error (fix the command, the config or the file); 3 a runtime error
(the chain, the enclave, a node or the cluster failed or cannot be reached; retry)."""


def exit_status(exc: SplitsealError) -> int:
    """The status for an error: input and configuration errors are usage errors."""
    from splitseal.errors import ConfigError, InvalidInputError, ModelError

    return EXIT_USAGE if isinstance(exc, (ConfigError, InvalidInputError, ModelError)) else EXIT_RUNTIME


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("splitseal")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitseal", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Confidential, auditable ML inference orchestrated by smart contracts.")
    parser.add_argument("--version", action="version", version=f"splitseal {_version()}")
    parser.add_argument("--config", help="TOML configuration file (default: $SPLITSEAL_CONFIG)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in _AREAS:
        importlib.import_module(f"orchestrator.cli.{area}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        config = load_config(args.config)
        return int(args.func(args, config) or 0)
    except SplitsealError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        return 130


