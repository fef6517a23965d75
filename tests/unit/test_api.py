"""`import splitseal` is the Python API, loaded on first use: the core alone loads nothing else."""

from __future__ import annotations

import subprocess
import sys


def test_the_api_names_are_the_systems():
    import splitseal
    from orchestrator.audit import Auditor
    from orchestrator.requester import Requester
    from splitseal.chain import connect

    assert splitseal.Requester is Requester and splitseal.Auditor is Auditor and splitseal.connect is connect
    assert set(splitseal._API) == set(__import__("splitseal.api", fromlist=["__all__"]).__all__)


def test_importing_the_core_loads_no_api():
    code = "import sys, splitseal.errors, splitseal.protocol; print('orchestrator' in sys.modules, 'web3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
