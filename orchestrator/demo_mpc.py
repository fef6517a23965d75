"""The MPC part of `splitseal demo`: a cluster of node processes (dealer + N nodes over
authenticated TCP) runs SFace on secret shares of real faces: it enrols three ORL people,
verifies a genuine and an impostor probe, identifies one, records everything on-chain
(FeatureShareRegistry, co-signed by every node) and audits it.

The terminal (this process) reads each photo, finds the face with YuNet, aligns it and shares
it; no node sees a photo, SFace's weights (shared mode) or a feature vector. Without the face
data (``scripts/setup`` fetches it) the same flow runs on the digits embedding model and says so.

``run(state_dir, chain, deployment, parties=2)`` returns the lines it printed; the demo driver
owns the chain.
"""

from __future__ import annotations

import logging
import time
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

    from mpc.client import faces

    if faces.available():
        _faces(state_dir, chain, deployment, parties, say)
    else:
        say(f"[mpc] no face data in {faces.cache_dir()} (scripts/setup fetches it): the digits model instead")
        _digits_flow(state_dir, chain, deployment, parties, say)
    return lines


def _bind(client: cl.MpcClient, chain: Any, deployment: Any, say: Callable[[str], None]) -> None:
    if chain is not None and deployment is not None:
        registry = deployment.feature_share_registry
        admin = chain.accounts[0]
        set_id = cl.register_node_set(chain, registry, client.addresses(), admin)
        client.chain = cl.ChainBinding(chain, registry, set_id, admin)
        say(f"[mpc] node set {set_id} registered: {', '.join(client.addresses())}")


def _audit(client: cl.MpcClient, chain: Any, subject: str, say: Callable[[str], None]) -> None:
    if client.chain is not None:
        h = subject_history(chain, client.chain.registry, subject)
        say(f"[mpc] audit {subject}: {len(h.enrolments)} enrolment(s), {len(h.decisions)} decision(s), "
            f"signatures {'verified' if h.verified else 'INVALID'}")


def _faces(state_dir: str | Path, chain: Any, deployment: Any, parties: int, say: Callable[[str], None]) -> None:
    from mpc.client import faces

    say(f"[mpc] model: SFace (128-d face features), {parties} nodes + dealer as processes, shared weights "
        f"(no node holds the model); threshold (cosine) {faces.SFACE_THRESHOLD:.2f}")
    info = cl.up(state_dir, load_onnx(faces.sface_path()), parties=parties, shared=True,
                 threshold=faces.SFACE_THRESHOLD, capture="face", timeout=120.0)
    client = cl.MpcClient(info)
    photo = {}  # person -> ORL photo -> 8-bit capture, as a camera would hand it to the terminal

    def capture(person: str, index: int) -> np.ndarray:
        return photo.setdefault((person, index), faces.example_capture(person, index)[0])

    try:
        _bind(client, chain, deployment, say)
        for person in ("s1", "s2", "s3"):
            t0 = time.perf_counter()
            r = client.enroll(person, capture(person, 1))
            say(f"[mpc] enrolled {person} (ORL {person}/1, YuNet-aligned on the terminal) in "
                f"{time.perf_counter() - t0:.1f} s: commitments {', '.join(x.hex()[:10] for x in r.commitments)}")
        for name, (person, index) in (("a genuine", ("s1", 2)), ("an impostor", ("s2", 2))):
            r = client.verify("s1", capture(person, index))
            say(f"[mpc] verify s1 with {name} probe (ORL {person}/{index}): "
                f"{'accepted' if r.accepted else 'rejected'} (score {r.score:.3f})")
        r = client.identify(capture("s3", 2))
        say(f"[mpc] identify ORL s3/2: {r.subject if r.accepted else 'no match'} (score {r.score:.3f})")
        _audit(client, chain, "s1", say)
    finally:
        client.close()
        cl.down(state_dir)


def _digits_flow(state_dir: str | Path, chain: Any, deployment: Any, parties: int,
                 say: Callable[[str], None]) -> None:
    path = PROJECT_ROOT / "models" / "digits_embedding.onnx"
    model = load_onnx(path) if path.exists() else random_model(SMALL_SPEC, (1, 28, 28), seed=0)
    say(f"[mpc] model: {path.name if path.exists() else 'random-weight small network'}, "
        f"{parties} nodes + dealer as processes, shared weights")
    threshold = (recorded_threshold(path) if path.exists() else None) or cl.DEFAULT_THRESHOLD
    say(f"[mpc] acceptance threshold (cosine): {threshold:.3f}")
    info = cl.up(state_dir, model, parties=parties, shared=True, threshold=threshold)
    client = cl.MpcClient(info)
    try:
        _bind(client, chain, deployment, say)
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
        _audit(client, chain, "digit-4", say)
    finally:
        client.close()
        cl.down(state_dir)
