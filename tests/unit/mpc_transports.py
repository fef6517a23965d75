"""Every Transport implementation, for the parametrized MPC suites."""

from __future__ import annotations

from pathlib import Path

from chain_node.mpc.transport import InProcessHub, Transport

TRANSPORT_KINDS = ["inprocess"]


def make_transports(kind: str, n: int, tmp: Path, timeout: float = 10.0) -> list[Transport]:
    if kind == "inprocess":
        return InProcessHub(n, timeout).transports
    raise ValueError(kind)
