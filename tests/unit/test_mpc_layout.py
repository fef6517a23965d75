"""The MPC package's three parts hold the modules the issue names (import rules: test_layers.py)."""

from __future__ import annotations

from pathlib import Path

import mpc

MPC_DIR = Path(mpc.__file__).resolve().parent


def _modules(part: str) -> set[str]:
    return {p.stem for p in (MPC_DIR / part).glob("*.py")}


def test_the_mpc_package_is_engine_node_client():
    assert _modules("engine") == {"__init__", "ring", "matmul", "beaver", "protocol", "transport", "channel",
                                  "recognition"}
    assert _modules("node") == {"__init__", "__main__", "node", "dealer", "store", "signing", "hybrid"}
    assert _modules("client") == {"__init__", "terminal", "owner", "cluster", "audit", "faces", "hybrid"}
