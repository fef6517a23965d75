"""Real faces end to end, short version (the full ORL evaluation is scripts/eval_mpc_faces).

The terminal detects (YuNet) and aligns three ORL captures, the nodes extract SFace features on
shares (2 and 3 parties, plaintext kernels; 2 parties shared weights on one face), and
recognition on shares reaches the same decisions as plaintext cosine on onnxruntime features.
Bound: features within 1e-3 of onnxruntime SFace (measured about 2e-4; SFace features are
O(0.5)), cosine to the plaintext feature above 0.9999.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpc.client import faces
from mpc.client.owner import load_onnx, node_models
from mpc.engine import ring
from mpc.engine.recognition import cosine_scores
from tests.support.mpc_local import LocalCluster

pytestmark = pytest.mark.skipif(not faces.available(), reason="face data missing: run scripts/setup")


@pytest.fixture(scope="module")
def captures():
    det = faces.FaceDetector()
    items = [faces.orl_images()[i] for i in (0, 1, 10)]  # s1/1, s1/2, s2/1
    xs = []
    for _, _, path in items:
        x, aligned = faces.terminal_input(faces.read_pgm(path), det)
        assert aligned and x.shape == (3, 112, 112) and 0 <= x.min() and x.max() <= 255
        xs.append(x)
    x = np.stack(xs)
    return x, faces.PlainSFace()(x), load_onnx(faces.sface_path())


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("n", [2, 3])
def test_sface_on_shares_matches_onnxruntime_and_recognises(captures, n):
    x, plain, model = captures
    cluster = LocalCluster(n, timeout=300, run_timeout=900)
    nodes = node_models(model, n, shared=False)
    xs = ring.share(ring.encode(x), n)
    feats = cluster.run(lambda s, p: s.infer(nodes[p], xs[p]))
    got = ring.decode(ring.reconstruct(feats))
    assert got.shape == (3, 128)
    assert np.abs(got - plain).max() < 1e-3
    assert min(_cos(g, q) for g, q in zip(got, plain)) > 0.9999
    # verify s1/2 against the enrolled s1/1 and s2/1, on shares; only the aggregator learns scores
    scores = cluster.run(lambda s, p: cosine_scores(s, feats[p][1], feats[p][[0, 2]]))
    cluster.close()
    assert all(sc is None for sc in scores[1:])
    ref = [_cos(plain[1], plain[0]), _cos(plain[1], plain[2])]
    assert np.abs(scores[0] - ref).max() < 1e-3
    threshold = 0.37  # ORL EER threshold of plaintext SFace on aligned faces (scripts/eval_mpc_faces)
    assert scores[0][0] >= threshold > scores[0][1]


def test_sface_with_shared_weights(captures):
    x, plain, model = captures
    cluster = LocalCluster(2, timeout=300, run_timeout=900)
    nodes = node_models(model, 2, shared=True)
    xs = ring.share(ring.encode(x[:1]), 2)
    feats = cluster.run(lambda s, p: s.infer(nodes[p], xs[p], s.mask_weights(nodes[p])))
    cluster.close()
    got = ring.decode(ring.reconstruct(feats))
    assert np.abs(got - plain[:1]).max() < 1e-3
