"""The MPC part of `splitseal demo`: a cluster of node processes enrols digits, verifies a
genuine and an impostor probe, identifies one, records everything on-chain and audits it.

``run(state_dir, chain, deployment, parties=2)`` returns the lines it printed; the demo driver
owns the chain. Uses the trained embedding model when it exists, else a random-weight network
(decisions are then meaningless as biometrics but the protocol is the same).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mpc.client import cluster as cl
from mpc.client.audit import subject_history
from mpc.client.owner import SMALL_SPEC, load_onnx, random_model, recorded_threshold
from splitseal.config import PROJECT_ROOT

log = logging.getLogger(__name__)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """Raw 8x8 captures of the reference models' held-out test split."""
    from sklearn.datasets import load_digits

    from orchestrator.training.data import split_indices

    d = load_digits()
    _, test = split_indices()
    return d.images[test] / 16.0, d.target[test]


def run(state_dir: str | Path, chain: Any = None, deployment: Any = None, parties: int = 2,
        echo: Callable[[str], None] = print) -> list[str]:
    lines: list[str] = []

    def say(text: str) -> None:
        lines.append(text)
        echo(text)

    path = PROJECT_ROOT / "models" / "digits_embedding.onnx"
    model = load_onnx(path) if path.exists() else random_model(SMALL_SPEC, (1, 28, 28), seed=0)
    say(f"[mpc] model: {path.name if path.exists() else 'random-weight small network'}, "
        f"{parties} nodes + dealer as processes, shared weights")
    threshold = (recorded_threshold(path) if path.exists() else None) or cl.DEFAULT_THRESHOLD
    say(f"[mpc] acceptance threshold (cosine): {threshold:.3f}")
    info = cl.up(state_dir, model, parties=parties, shared=True, threshold=threshold)
    client = cl.MpcClient(info)
    try:
        if chain is not None and deployment is not None:
            registry = deployment.feature_share_registry
            admin = chain.accounts[0]
            set_id = cl.register_node_set(chain, registry, client.addresses(), admin)
            client.chain = cl.ChainBinding(chain, registry, set_id, admin)
            say(f"[mpc] node set {set_id} registered: {', '.join(client.addresses())}")
        images, labels = _digits()
        first = {int(c): int(np.flatnonzero(labels == c)[0]) for c in (1, 4, 7)}
        for c, i in first.items():
            r = client.enroll(f"digit-{c}", images[i])
            say(f"[mpc] enrolled digit-{c}: commitments {', '.join(x.hex()[:10] for x in r.commitments)}")
        genuine = int(np.flatnonzero(labels == 4)[1])
        impostor = int(np.flatnonzero(labels == 7)[1])
        for name, idx in (("a genuine", genuine), ("an impostor", impostor)):
            r = client.verify("digit-4", images[idx])
            say(f"[mpc] verify digit-4 with {name} probe: {'accepted' if r.accepted else 'rejected'} "
                f"(score {r.score:.3f})")
        r = client.identify(images[int(np.flatnonzero(labels == 1)[1])])
        say(f"[mpc] identify: {r.subject if r.accepted else 'no match'} (score {r.score:.3f})")
        if client.chain is not None:
            h = subject_history(chain, client.chain.registry, "digit-4")
            say(f"[mpc] audit digit-4: {len(h.enrolments)} enrolment(s), {len(h.decisions)} decision(s), "
                f"signatures {'verified' if h.verified else 'INVALID'}")
    finally:
        client.close()
        cl.down(state_dir)
    return lines
