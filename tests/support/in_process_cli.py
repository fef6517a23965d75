"""The CLI's one-shot commands run through ``orchestrator.cli.main`` in the test's own process.

The same parser, handlers, documents and exit statuses as ``python -m orchestrator.cli``, with
stdout and stderr captured by pytest's ``capsys``, but without a new interpreter per command:
starting one and importing what a chain command needs takes about 2.5 s here (web3 alone 2 s),
which the CLI tests on anvil paid dozens of times. Long-running commands (``enclave serve``,
``node run``, the keeper, the MPC nodes that ``mpc up`` starts, ``chain up``'s anvil) stay
processes of their own; ``tests/e2e/test_inference_cli.py`` runs every command as a subprocess,
as a user's shell does.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import main


def user_environment(monkeypatch: pytest.MonkeyPatch, home: Path, keep: tuple[str, ...] = ()) -> None:
    """No SPLITSEAL_* setting of the caller's but ``keep``; ``home`` as SPLITSEAL_HOME."""
    for name in [k for k in os.environ if k.startswith("SPLITSEAL_") and k not in keep]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SPLITSEAL_HOME", str(home))


class InProcessCli:
    """``cli(*args, expect=0)`` runs ``splitseal [--config CONFIG] ARGS`` and returns what a
    subprocess would: its exit status, stdout and stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str], config: Path | None = None) -> None:
        self.capsys = capsys
        self.prefix = ["--config", str(config)] if config else []

    def __call__(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        argv = [*self.prefix, *args]
        self.capsys.readouterr()
        try:
            status = main(argv)
        except SystemExit as exc:  # usage errors leave through argparse
            status = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        if expect is not None:
            assert status == expect, f"splitseal {' '.join(argv)}: exit {status}\n{out[-1500:]}\n{err[-3000:]}"
        return subprocess.CompletedProcess(argv, status, out, err)
