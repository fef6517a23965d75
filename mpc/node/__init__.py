"""The MPC node side: the feature-share node, the dealer, a node's store and its signatures.

| module | what |
|---|---|
| :mod:`.node` | :class:`MpcNode` (setup / poll_once / run / stop), :class:`ClusterInfo`, ``request`` / ``reply`` |
| :mod:`.dealer` | :class:`DealerService`: seeds for every node, triple corrections for node N-1 |
| :mod:`.store` | a node's SQLite: model, masked weights, feature shares (two-phase), decisions |
| :mod:`.signing` | EIP-712 ``ShareCommitment`` / ``Decision`` signatures for FeatureShareRegistry |

``python -m mpc.node --state-dir DIR (--party I | --dealer)`` runs one process of a cluster
(:func:`main`); :func:`run_service` is the same body for ``splitseal mpc node run``.
Layering: this package uses :mod:`mpc.engine` and ``splitseal``, never :mod:`mpc.client`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

#: ``events(name, fields)``: where ``splitseal mpc node run --json`` prints its JSON lines.
EventSink = Callable[..., None]


def main(argv: list[str] | None = None) -> int:
    """``python -m mpc.node --state-dir DIR (--party I | --dealer)``."""
    import argparse

    ap = argparse.ArgumentParser(prog="splitseal-mpc-node")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--party", type=int)
    ap.add_argument("--dealer", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if not args.dealer and args.party is None:
        ap.error("give --party I or --dealer")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_service(args.state_dir, args.party, args.dealer)


def run_service(state_dir: str | Path, party: int | None, dealer: bool, events: EventSink | None = None) -> int:
    """Set up, run until SIGTERM, close: the body of ``splitseal mpc node run``. ``events``, when
    given, is told ``ready``, each ``request`` a node serves (its op, error type, duration) and
    ``stopped``."""
    import sys

    from .dealer import DealerService
    from .node import ClusterInfo, MpcNode

    # Reader threads must hand frames to the protocol thread at once: with CPython's default 5 ms
    # GIL switch interval a thread woken by I/O can wait that long behind a computing thread.
    sys.setswitchinterval(0.0002)
    cluster = ClusterInfo.load(state_dir)
    service: MpcNode | DealerService = DealerService(cluster) if dealer else MpcNode(cluster, int(party))
    service.install_signals()
    role: dict[str, Any] = {"role": "dealer"} if dealer else {"role": "node", "party": int(party)}
    if events is not None and isinstance(service, MpcNode):
        service.on_served = lambda op, error, seconds: events(
            "request", **role, op=op, ok=error is None, error=error, ms=round(seconds * 1e3, 2))
    try:
        service.setup()
        if events is not None:
            events("ready", **role, port=service.listener.port if service.listener else None)
        service.run()
    finally:
        service.close()
    if events is not None:
        events("stopped", **role)
    return 0
