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


def run_service(state_dir: str | Path, party: int | None, dealer: bool) -> int:
    """Set up, run until SIGTERM, close: the body of ``splitseal mpc node run``."""
    import sys

    from .dealer import DealerService
    from .node import ClusterInfo, MpcNode

    # Reader threads must hand frames to the protocol thread at once: with CPython's default 5 ms
    # GIL switch interval a thread woken by I/O can wait that long behind a computing thread.
    sys.setswitchinterval(0.0002)
    cluster = ClusterInfo.load(state_dir)
    service: MpcNode | DealerService = DealerService(cluster) if dealer else MpcNode(cluster, int(party))
    service.install_signals()
    try:
        service.setup()
        service.run()
    finally:
        service.close()
    return 0
