"""What a command prints: text for people, or with ``--json`` one JSON document on stdout (JSON
lines of events for the long-running commands), errors included. docs/CLI.md lists the shapes.

Every leaf command gets ``--json`` (:func:`add_json_flags`); a command prints through
:func:`emit` (its result) or :func:`event` (one line of a long-running command). Under ``--json``
progress and notes go to stderr, so stdout parses as JSON whatever happens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Iterable

JSON_HELP = "print the result as one JSON document on stdout (docs/CLI.md lists its shape)"
JSON_LINES_HELP = "print JSON lines of events on stdout, one per line (docs/CLI.md lists them)"


def add_json_flags(leaves: Iterable[tuple[str, argparse.ArgumentParser]], long_running: Iterable[str]) -> None:
    """``--json`` on every leaf command that has none of its own."""
    streaming = set(long_running)
    for path, parser in leaves:
        if not any("--json" in action.option_strings for action in parser._actions):
            parser.add_argument("--json", action="store_true",
                                help=JSON_LINES_HELP if path in streaming else JSON_HELP)


def wants_json(args: argparse.Namespace | None) -> bool:
    return bool(getattr(args, "json", False))


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(doc: Any, *, indent: int | None = 2) -> str:
    return json.dumps(doc, indent=indent, default=_default)


def emit(args: argparse.Namespace, doc: Any, text: str | None = None) -> None:
    """The command's result: ``doc`` as JSON under --json, else ``text`` (nothing when None)."""
    if wants_json(args):
        print(dumps(doc), flush=True)
    elif text is not None:
        print(text, flush=True)


def event(args: argparse.Namespace, name: str, text: str | None = None, **fields: Any) -> None:
    """One event of a long-running command: a JSON line ``{"event": name, "time": ..., **fields}``
    under --json, else ``text``."""
    if wants_json(args):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(dumps({"event": name, "time": stamp, **fields}, indent=None), flush=True)
    elif text is not None:
        print(text, flush=True)


def note(args: argparse.Namespace, text: str) -> None:
    """A line for people beside the result: stdout normally, stderr under --json."""
    print(text, file=sys.stderr if wants_json(args) else sys.stdout, flush=True)


def progress(message: str) -> None:
    """One step of a command that takes seconds, as it starts: a line on stderr (in text and
    JSON mode alike), so stdout keeps the result alone."""
    print(f"... {message}", file=sys.stderr, flush=True)


def error_document(kind: str, message: str, status: int) -> dict[str, Any]:
    """``{"error": {"type", "message", "exit"}}``: what every command prints under --json when it fails."""
    return {"error": {"type": kind, "message": message, "exit": status}}
