"""Real faces through the real node processes and the chain: an SFace cluster (dealer + 2 nodes
as OS processes over authenticated TCP) whose terminal reads ORL captures as files (0..255 PGM,
YuNet detection and alignment on the client), enrols two people, verifies a genuine and an
impostor probe, identifies one, records everything in FeatureShareRegistry and audits it.

Each decision's score is compared with plaintext cosine on onnxruntime SFace features of the
same aligned faces (bound 1e-3; measured about 1e-4), and the decisions with the plaintext
decisions at the cluster's threshold. SFace on shares costs about 1.5 s per face on 2 cores with
plaintext kernels (the shared-weights mode is covered in-process by test_mpc_faces.py): five
faces here.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from mpc.client import cluster as cl
from mpc.client import faces
from mpc.client.audit import subject_history
from mpc.client.owner import load_onnx
from splitseal.errors import InvalidInputError

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not faces.available(), reason="face data missing: run scripts/setup")]


def _path(person: str, photo: int):
    return faces.cache_dir() / faces.ORL_DIR / person / f"{photo}.pgm"


@functools.cache
def _plain_pipeline() -> tuple[faces.FaceCapture, faces.PlainSFace]:
    return faces.FaceCapture(), faces.PlainSFace()


def _plain_feature(path) -> np.ndarray:
    capture, sface = _plain_pipeline()
    return sface(capture(faces.read_pgm(path), (3, 112, 112))[None])[0]


def _cos(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def face_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("faces") / "mpc"
    info = cl.up(state, load_onnx(faces.sface_path()), parties=2, shared=False,
                 threshold=faces.SFACE_THRESHOLD, capture="face", timeout=120.0)
    yield info
    cl.down(state)


def test_faces_enrolled_verified_identified_on_chain_and_audited(face_cluster, chain, deployment):
    registry = deployment.feature_share_registry
    admin = chain.accounts[0]
    client = cl.MpcClient(face_cluster)
    assert client.terminal.capture == "face"
    set_id = cl.register_node_set(chain, registry, client.addresses(), admin)
    client.chain = cl.ChainBinding(chain, registry, set_id, admin)
    gallery = {"s1": _path("s1", 1), "s2": _path("s2", 1)}
    genuine, impostor = _path("s1", 2), _path("s3", 1)
    plain = {k: _plain_feature(p) for k, p in gallery.items()}
    p_genuine, p_impostor = _plain_feature(genuine), _plain_feature(impostor)
    threshold = client.threshold
    # the plaintext pipeline accepts the genuine pair and rejects the impostor, away from the
    # threshold by more than the MPC's bound, so the MPC must decide the same
    assert _cos(p_genuine, plain["s1"]) > threshold + 1e-3
    assert _cos(p_impostor, plain["s1"]) < threshold - 1e-3
    try:
        for name, path in gallery.items():
            r = client.enroll(name, path)  # the file: the terminal reads, detects, aligns, shares
            assert len(r.commitments) == 2 and r.tx
        r = client.verify("s1", genuine)
        assert r.accepted and r.tx and abs(r.score - _cos(p_genuine, plain["s1"])) < 1e-3
        r = client.verify("s1", impostor)
        assert not r.accepted and r.tx and abs(r.score - _cos(p_impostor, plain["s1"])) < 1e-3
        r = client.identify(_path("s2", 2))
        probe = _plain_feature(_path("s2", 2))
        best = max(plain, key=lambda k: _cos(probe, plain[k]))
        assert r.accepted and r.subject == best == "s2"
        # a capture without a face is refused by the terminal before anything is shared
        with pytest.raises(InvalidInputError, match="no face found"):
            client.verify("s1", np.tile(np.linspace(0, 255, 92), (112, 1)))
        assert all(s["enrolled"] == 2 and s["pending"] == 0 for s in client.status())
    finally:
        client.close()
    h = subject_history(chain, registry, "s1")
    assert h.verified and len(h.enrolments) == 1
    assert [(d.kind, d.accepted) for d in h.decisions] == [("verify", True), ("verify", False)]
    h2 = subject_history(chain, registry, "s2")
    assert h2.verified and [(d.kind, d.accepted) for d in h2.decisions] == [("identify", True)]
