"""MPC nodes as real OS processes over authenticated TCP: enrol, verify, identify, on-chain
records and their audit, decisions identical to the plaintext pipeline, a node dying.

The embedding model is ``models/digits_embedding.onnx`` when it exists, else a random-weight
network of the benchmark's small shape (the comparison with plaintext holds for any weights).
Held-out data: the reference models' test split of scikit-learn's digits (never trained on).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mpc.client import cluster as cl
from mpc.client.audit import subject_history
from mpc.client.owner import SMALL_SPEC, load_onnx, plain_forward, random_model
from mpc.client.terminal import normalise
from mpc.node.node import ClusterInfo
from splitseal.errors import ProtocolError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _model():
    path = ROOT / "models" / "digits_embedding.onnx"
    if path.exists():
        return load_onnx(path)
    return random_model(SMALL_SPEC, (1, 28, 28), seed=5)


def _recorded_threshold():
    """The trained model's equal-error-rate threshold (the plaintext pipeline's), if any."""
    path = ROOT / "models" / "digits_embedding.metrics.json"
    if not path.exists():
        return None
    return float(json.loads(path.read_text())["metrics"]["threshold"])


def _held_out(n_per_class: int = 2, classes: int = 6):
    """Test-split images of the reference models (never trained on), as raw 8x8 captures."""
    from sklearn.datasets import load_digits

    from orchestrator.training.data import split_indices

    d = load_digits()
    _, test = split_indices()
    imgs, labels = d.images[test] / 16.0, d.target[test]
    out = []
    for c in range(classes):
        idx = np.flatnonzero(labels == c)[:n_per_class]
        out += [(int(c), imgs[i]) for i in idx]
    return out


def _wait_dead(pid: int) -> None:
    for _ in range(200):
        try:
            os.waitpid(pid, os.WNOHANG)
            os.kill(pid, 0)
        except (ChildProcessError, ProcessLookupError):
            return
        time.sleep(0.01)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _threshold_in_gap(scores):
    s = np.sort(np.asarray(scores))
    mid = len(s) // 2
    gaps = np.diff(s)
    i = int(np.argmax(gaps[max(0, mid - 4):mid + 4])) + max(0, mid - 4)
    return float((s[i] + s[i + 1]) / 2), float(gaps[i])


@pytest.fixture
def two_node_cluster(tmp_path):
    model = _model()
    info = cl.up(tmp_path / "mpc", model, parties=2, shared=True)
    yield info, model
    cl.down(tmp_path / "mpc")


def test_enrol_verify_identify_match_plaintext_and_are_audited(two_node_cluster, any_chain, any_deployment):
    chain, deployment = any_chain, any_deployment
    info, model = two_node_cluster
    registry = deployment.feature_share_registry
    admin = chain.accounts[0]
    client = cl.MpcClient(info)
    set_id = cl.register_node_set(chain, registry, client.addresses(), admin)
    client.chain = cl.ChainBinding(chain, registry, set_id, admin)
    shape = model.input_shape
    data = _held_out()
    gallery = {f"digit-{c}": img for c, img in data[::2]}  # first sample of each class enrolled
    probes = [(f"digit-{c}", img) for c, img in data[1::2]]
    feats = {k: plain_forward(model, normalise(v, shape)[None])[0] for k, v in gallery.items()}
    pscores = [[_cos(plain_forward(model, normalise(img, shape)[None])[0], feats[s]) for s in sorted(feats)]
               for _, img in probes]
    threshold = _recorded_threshold()
    if threshold is None:  # random weights: a threshold between two plaintext scores
        threshold, gap = _threshold_in_gap(np.ravel(pscores))
        assert gap > 2e-3, "plaintext scores too close to the threshold for an exact comparison"
    # the MPC score is within 1e-3 of the plaintext one; a pair closer than that to the threshold
    # could legitimately fall either way, and none is expected among these pairs
    assert all(abs(ps - threshold) > 1e-3 for row in pscores for ps in row)
    decisions = {ps >= threshold for row in pscores for ps in row}
    assert decisions == {True, False}, "the pairs must include accepted and rejected ones"
    try:
        enrolled = {}
        for subject, img in gallery.items():
            r = client.enroll(subject, img)
            assert len(r.commitments) == 2 and r.tx
            enrolled[subject] = r.commitments
        # 1:1 — every probe against every enrolled subject
        names = sorted(feats)
        for (claimed_true, img), row in zip(probes, pscores):
            for name, ps in zip(names, row):
                r = client.verify(name, img, threshold)
                assert r.accepted == (ps >= threshold), (name, ps, r.score)
                assert abs(r.score - ps) < 1e-3
        # 1:N
        for (_, img), row in zip(probes, pscores):
            r = client.identify(img, threshold)
            best = int(np.argmax(row))
            assert r.accepted == (row[best] >= threshold)
            assert r.subject == (names[best] if r.accepted else None)
        # the chain holds every enrolment and decision, co-signed by both nodes
        for name in names:
            h = subject_history(chain, registry, name)
            assert h.verified and len(h.enrolments) == 1
            assert h.enrolments[0].commitments == enrolled[name]
            assert len([d for d in h.decisions if d.kind == "verify"]) == len(probes)
        # a node can open its on-chain commitment with the salt and share it keeps; nothing else opens it
        from mpc.client.audit import verify_share_opening
        from mpc.node.store import NodeStore
        store = NodeStore(info.state_dir / "node-1" / "store.sqlite3")
        salt, commitment = store.salt_and_commitment(names[0])
        share = store.share(names[0])
        store.close()
        onchain = subject_history(chain, registry, names[0]).enrolments[0].commitments[1]
        assert commitment == onchain and verify_share_opening(onchain, salt, share)
        assert not verify_share_opening(onchain, salt, share + np.uint64(1))
    finally:
        client.close()


def test_three_nodes_plaintext_kernels_and_failed_enrolment_leaves_nothing(tmp_path):
    model = _model()
    state = tmp_path / "mpc3"
    info = cl.up(state, model, parties=3, shared=False)
    try:
        client = cl.MpcClient(info)
        data = _held_out(1, 3)
        for c, img in data:
            client.enroll(f"s{c}", img)
        r = client.identify(data[1][1], threshold=0.0)
        assert r.accepted and r.subject == "s1" and r.score > 0.999
        with pytest.raises(Exception, match="already enrolled"):
            client.enroll("s0", data[0][1])
        assert all(s["enrolled"] == 3 and s["pending"] == 0 for s in client.status())
        client.close()
        info_json = json.loads((state / "cluster.json").read_text())
        # node 0 dies: clients get a clear error; restarted, it rejoins (the others redial it)
        # with its enrolments intact
        os.kill(info_json["nodes"][0]["pid"], signal.SIGKILL)
        _wait_dead(info_json["nodes"][0]["pid"])
        with pytest.raises(ProtocolError, match="not answering"):
            cl.MpcClient(info, connect_timeout=0.5)
        info_json["nodes"][0]["pid"] = subprocess.Popen(
            [sys.executable, "-m", "mpc.node", "--state-dir", str(state), "--party", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True).pid
        (state / "cluster.json").write_text(json.dumps(info_json))
        client = cl.MpcClient(info, connect_timeout=20)
        r = client.identify(data[2][1], threshold=0.0)
        assert r.subject == "s2" and all(s["enrolled"] == 3 for s in client.status())
        client.close()
        # node 2 disappears: the next session fails cleanly on every node, nothing half-stored
        os.kill(info_json["nodes"][2]["pid"], signal.SIGKILL)
        _wait_dead(info_json["nodes"][2]["pid"])
        client = cl.MpcClient(ClusterInfo(info.state_dir, 2, info.host, info.node_ports[:2], info.dealer_port))
        client.info = info_json
        with pytest.raises(ProtocolError, match="disconnected|aborted|is down"):
            client._all("enroll", [{"session": os.urandom(32).hex(), "seed": os.urandom(32).hex(),
                                    "subject": "late"}] * 2,
                        [[s] for s in client.terminal.shares(data[2][1])[:2]])
        for s in client.status():
            assert s["enrolled"] == 3 and s["pending"] == 0
        client.close()
    finally:
        cl.down(state)


def test_concurrent_clients_are_serialised(tmp_path):
    """Two clients at once: every session completes (no interleaving across nodes)."""
    import threading

    model = random_model(SMALL_SPEC, (1, 28, 28), seed=6)
    info = cl.up(tmp_path / "mpcc", model, parties=3, shared=False)
    try:
        rng = np.random.default_rng(2)
        errors: list[BaseException] = []

        def worker(tag: str) -> None:
            client = cl.MpcClient(info)
            try:
                for i in range(4):
                    client.enroll(f"{tag}-{i}", rng.random((28, 28)))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=worker, args=(t,)) for t in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        client = cl.MpcClient(info)
        assert all(s["enrolled"] == 8 and s["pending"] == 0 for s in client.status())
        client.close()
    finally:
        cl.down(tmp_path / "mpcc")
