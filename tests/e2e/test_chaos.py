"""The short chaos run: anvil, an enclave and nodes as processes started with the README's
commands (three nodes, each with its own account and state directory, one shared input key),
good and poison requests, the enclave and the nodes killed (SIGKILL) and restarted while
requests are in flight; counted from chain events only (scripts/chaos; the full run with
--requests 200 is in docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_chaos_run_loses_nothing_duplicates_nothing_and_completes_every_good_request(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSEAL_")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "chaos"), "--requests", "14", "--rate", "2",
                           "--ttl", "45", "--kill-every", "2.5", "--min-uptime", "3", "--nodes", "3", "--seed", "3", "--json", "--keep", str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.stdout.strip(), proc.stderr
    figures = json.loads(proc.stdout)
    assert figures["kills"] >= 2, figures  # the run did crash things
    assert figures["sent"] == 14
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["pending_after_deadline"] == 0, figures
    assert figures["good_not_completed"] == [], figures
    assert figures["completed"] == figures["good"]
    assert sum(figures["failed"].values()) == figures["poison"], figures  # each poison ends with a reason
    assert proc.returncode == 0, proc.stdout + proc.stderr
