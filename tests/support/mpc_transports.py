"""Every Transport implementation, for the parametrized MPC suites."""

from __future__ import annotations

from pathlib import Path

from mpc.engine.transport import InProcessHub, Transport
from tests.support.mpc_local import tcp_mesh

TRANSPORT_KINDS = ["inprocess", "tcp"]


def make_transports(kind: str, n: int, tmp: Path, timeout: float = 10.0) -> list[Transport]:
    if kind == "inprocess":
        return InProcessHub(n, timeout).transports
    if kind == "tcp":
        return tcp_mesh(n, tmp / "keys", timeout)
    raise ValueError(kind)
