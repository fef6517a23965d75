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

from orchestrator import version
from splitseal.config import load_config
from splitseal.errors import SplitsealError

# Areas whose modules register sub-commands, in the order they appear in --help.
_AREAS = ("compile", "chain", "model", "train", "enclave", "node", "mpc", "audit", "demo")


def group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """The sub-command group ``splitseal NAME ...``, created on first use.

    Several areas may add commands to one group (``model train`` and ``model provision``).
    """
    # kept on the action itself: a dict keyed by id(sub) handed a later parser, built where a
    # collected one had lived, the old parser's groups ("conflicting subparser")
    groups = sub.__dict__.setdefault("_splitseal_groups", {})
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


#: One example per command, shown under its --help (tests/e2e/test_cli_basics.py parses each).
EXAMPLES = {
    "compile": "splitseal compile --check",
    "chain up": "splitseal chain up --port 8545",
    "chain down": "splitseal chain down",
    "chain status": "splitseal chain status",
    "deploy": "splitseal deploy --chain anvil --json",
    "model split": "splitseal model split models/digits_classifier.onnx --rule rules/digits_classifier.toml "
                   "--out var/split --dataset digits",
    "model inspect": "splitseal model inspect models/digits_classifier.onnx --rule rules/digits_classifier.toml",
    "model example-input": "splitseal model example-input models/digits_classifier.onnx --out image.npy",
    "model train": "splitseal model train --model digits_classifier",
    "model provision": "splitseal model provision var/split --model-id digits --register --allow-measurement "
                       "--chain anvil",
    "enclave serve": "splitseal enclave serve",
    "enclave attest": "splitseal enclave attest --chain anvil",
    "enclave status": "splitseal enclave status --json",
    "enclave restore": "splitseal enclave restore --chain anvil",
    "node run": "splitseal node run --chain anvil --backbone var/split/node --authorize",
    "node keeper": "splitseal node keeper --chain anvil --once",
    "infer": "splitseal infer --chain anvil --model digits --input image.npy --wait",
    "mpc up": "splitseal mpc up --chain anvil --parties 2",
    "mpc down": "splitseal mpc down",
    "mpc status": "splitseal mpc status",
    "mpc example-image": "splitseal mpc example-image --digit 3 --out alice.png",
    "mpc enroll": "splitseal mpc enroll --subject alice alice.png",
    "mpc verify": "splitseal mpc verify --subject alice probe.png",
    "mpc identify": "splitseal mpc identify probe.png",
    "mpc audit": "splitseal mpc audit alice --json",
    "mpc infer": "splitseal mpc infer --model digits-hybrid image.npy --authorize --json",
    "mpc node run": "splitseal mpc node run --state-dir var/mpc --party 0",
    "audit request": "splitseal audit request 1 --chain http://127.0.0.1:8545 --registry 0xREGISTRY",
    "audit model": "splitseal audit model digits --chain anvil --html report.html",
    "audit enclave": "splitseal audit enclave 0xENCLAVE --chain anvil --socket var/enclave/enclave.sock",
    "audit subject": "splitseal audit subject alice --chain anvil",
    "demo": "splitseal demo --chain anvil --requests 50",
}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser, its one-line help) of every leaf command, in --help order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                found = list(commands(child, (*path, name)))
                yield from found or [(" ".join((*path, name)), child, helps.get(name) or "")]
            return


def _explain(parser: argparse.ArgumentParser) -> None:
    """Every command gets a description (its help, where it has none) and its example."""
    for path, child, help_text in commands(parser):
        child.description = child.description or (help_text[:1].upper() + help_text[1:] + ".")
        if path in EXAMPLES:
            child.epilog = f"example:\n  {EXAMPLES[path]}\n\n{EPILOG}"
            child.formatter_class = argparse.RawDescriptionHelpFormatter


def exit_status(exc: SplitsealError) -> int:
    """The status for an error: input and configuration errors are usage errors."""
    from splitseal.errors import ConfigError, InvalidInputError, ModelError

    return EXIT_USAGE if isinstance(exc, (ConfigError, InvalidInputError, ModelError)) else EXIT_RUNTIME


#: Commands that run until stopped: under --json they print JSON lines of events.
LONG_RUNNING = ("enclave serve", "node run", "node keeper", "mpc node run")


class UsageError(Exception):
    """A command line argparse refuses; :func:`main` reports it (as JSON under --json)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is raised for :func:`main` to report, not printed here."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(self, message)


def build_parser() -> argparse.ArgumentParser:
    from .output import add_json_flags

    parser = _Parser(
        prog="splitseal", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Confidential, auditable ML inference orchestrated by smart contracts.")
    parser.add_argument("--version", action="version", version=f"splitseal {version()}")
    parser.add_argument("--config", help="TOML configuration file (default: $SPLITSEAL_CONFIG)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in _AREAS:
        importlib.import_module(f"orchestrator.cli.{area}").register(sub)
    _explain(parser)
    add_json_flags(((path, child) for path, child, _ in commands(parser)), LONG_RUNNING)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .output import dumps, error_document

    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc}", file=sys.stderr)
        if as_json:
            print(dumps(error_document("UsageError", f"{exc.parser.prog}: {exc}", EXIT_USAGE)))
        raise SystemExit(EXIT_USAGE) from None
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        config = load_config(args.config)
        return int(args.func(args, config) or 0)
    except SplitsealError as exc:
        status = exit_status(exc)
        print(f"error: {exc}", file=sys.stderr)
        if as_json:
            print(dumps(error_document(type(exc).__name__, str(exc), status)), flush=True)
        return status
    except OSError as exc:
        # a path the command was given or configured that it cannot use (a directory for a file,
        # no permission, no such parent): the user's to fix; a connection failure is runtime
        status = EXIT_USAGE if exc.filename else EXIT_RUNTIME
        where = f"cannot use {exc.filename}: " if exc.filename else ""
        message = (f"{where}{exc.strerror or exc}"
                   + ("; check the path you gave (or configured) and its permissions" if exc.filename else ""))
        print(f"error: {message}", file=sys.stderr)
        if as_json:
            print(dumps(error_document(type(exc).__name__, message, status)), flush=True)
        return status
    except KeyboardInterrupt:
        return 130


