"""Every secure operation against plaintext, for every Transport implementation and N = 2, 3.

Tolerances (absolute, inputs in [0, 1], weights O(1)): encoding error 2^-17 per value plus
truncation error of a few 2^-16; we assert 1e-3 on whole networks (the issue's bound) and
tighter where an operation is a single product.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpc.client.owner import BIG_SPEC, SMALL_SPEC, node_models, plain_forward, random_model
from mpc.engine import ring
from mpc.engine.beaver import Dealer, DealerTripleProvider, resolve
from mpc.engine.matmul import conv2d_float
from mpc.engine.protocol import Layer
from mpc.engine.transport import InProcessHub
from splitseal.errors import ProtocolError
from tests.support.mpc_local import LocalCluster, run_parties
from tests.support.mpc_transports import TRANSPORT_KINDS, make_transports

RNG = np.random.default_rng(11)


@pytest.fixture(params=[(k, n) for k in TRANSPORT_KINDS for n in (2, 3)],
                ids=lambda p: f"{p[0]}-N{p[1]}")
def cluster(request, tmp_path):
    kind, n = request.param
    transports = make_transports(kind, n, tmp_path)
    c = LocalCluster(n, transports)
    yield c
    c.close()


def _shares(x, n, frac=16):
    return ring.share(ring.encode(x, frac), n)


def test_open_and_reveal(cluster):
    x = RNG.standard_normal((5, 7))
    xs = _shares(x, cluster.n)
    outs = cluster.run(lambda s, p: (s.open(xs[p])[0], s.reveal_to(1, xs[p])))
    for opened, _ in outs:
        assert np.abs(ring.decode(opened) - x).max() < 1e-4
    assert outs[0][1] is None and np.abs(ring.decode(outs[1][1][0]) - x).max() < 1e-4


def test_conv_public_and_shared(cluster):
    n = cluster.n
    x = RNG.random((2, 3, 10, 10))
    w = RNG.standard_normal((4, 3, 3, 3)) * 0.4
    b = RNG.standard_normal(4) * 0.1
    ref = conv2d_float(x, w, b, stride=1, padding=1)
    xs = _shares(x, n)
    wint, bint = ring.encode_int(w), ring.encode_int(b, 32)
    ws, bs = _shares(w, n), _shares(b, n, 32)
    out = cluster.run(lambda s, p: (s.conv_public(xs[p], wint, bint, 1, 1), s.conv_shared(xs[p], ws[p], bs[p], 1, 1)))
    pub = ring.decode(ring.reconstruct([o[0] for o in out]), 32)
    shd = ring.decode(ring.reconstruct([o[1] for o in out]), 32)
    assert np.abs(pub - ref).max() < 5e-4
    assert np.abs(shd - ref).max() < 5e-4


def test_linear_matmul_mul_truncate(cluster):
    n = cluster.n
    x = RNG.standard_normal((3, 20))
    w = RNG.standard_normal((6, 20)) * 0.3
    y = RNG.standard_normal((3, 20))
    xs, ws, ys = _shares(x, n), _shares(w, n), _shares(y, n)

    def body(s, p):
        lin = s.truncate(s.linear_shared(xs[p], ws[p], None))
        prod = s.truncate(s.mul(xs[p], ys[p]))
        pub = s.truncate(s.linear_public(xs[p], ring.encode_int(w), None))
        return lin, prod, pub

    out = cluster.run(body)
    for idx, ref in enumerate((x @ w.T, x * y, x @ w.T)):
        got = ring.decode(ring.reconstruct([o[idx] for o in out]))
        assert np.abs(got - ref).max() < 1e-3


@pytest.mark.parametrize("ops", [
    [("act", "relu"), ("pool", "max", 2)],
    [("act", "sigmoid"), ("pool", "avg", 2)],
    [("act", "tanh")],
    [("pool", "max", 3), ("act", "relu")],
])
def test_mask_recovery_matches_plaintext(cluster, ops):
    n = cluster.n
    y = RNG.standard_normal((2, 3, 9, 8)) * 2
    layers = [Layer(o[0], params={"kind": o[1], **({"k": o[2]} if o[0] == "pool" else {})}) for o in ops]
    ys = _shares(y, n, 32)
    out = cluster.run(lambda s, p: s.mask_recover(ys[p], 32, layers))
    from mpc.client.owner import FloatLayer, FloatModel
    ref = plain_forward(FloatModel((3, 9, 8), [FloatLayer(la.op, params=la.params) for la in layers]), y)
    got = ring.decode(ring.reconstruct(out)).reshape(2, -1)
    assert np.abs(got - ref).max() < 1e-4
    # every output share on its own is unrelated to the output: no share equals the encoding
    enc = ring.encode(ref.reshape(out[0].shape))
    assert all((o == enc).mean() < 0.01 for o in out)


def test_mask_recovery_partition_is_complementary_and_window_aligned():
    hub = InProcessHub(3)
    c = LocalCluster(3, hub.transports)
    owners = c.run(lambda s, p: s._owners("x", 101), session_id="fixed")
    assert all(np.array_equal(owners[0], o) for o in owners)  # all nodes agree
    counts = np.bincount(owners[0], minlength=3)
    assert counts.sum() == 101 and counts.max() - counts.min() <= 1  # each window exactly one node
    c.close()


@pytest.mark.parametrize("shared", [False, True], ids=["plaintext-kernels", "shared-kernels"])
def test_small_network_features_match_plaintext(cluster, shared):
    model = random_model(SMALL_SPEC, (1, 28, 28), seed=3)
    x = RNG.random((2, 1, 28, 28))
    nodes = node_models(model, cluster.n, shared)
    xs = _shares(x, cluster.n)
    out = cluster.run(lambda s, p: s.infer(nodes[p], xs[p]))
    feats = ring.decode(ring.reconstruct(out))
    assert feats.shape == (2, 64)
    assert np.abs(feats - plain_forward(model, x)).max() < 1e-3
    for o in out:  # a feature share alone is uniform-looking, not the features
        assert np.abs(ring.decode(o)).max() > 1e6


def test_big_network_features_match_plaintext():
    model = random_model(BIG_SPEC, (3, 64, 64), seed=4)
    x = RNG.random((1, 3, 64, 64))
    c = LocalCluster(2)
    nodes = node_models(model, 2, shared=False)
    xs = _shares(x, 2)
    out = c.run(lambda s, p: s.infer(nodes[p], xs[p]))
    assert np.abs(ring.decode(ring.reconstruct(out)) - plain_forward(model, x)).max() < 1e-3
    c.close()


@pytest.mark.parametrize("n", [2, 3])
def test_dealer_triples_are_correct(n):
    from mpc.engine.matmul import ring_conv2d, ring_matmul

    dealer = Dealer(n)
    provs = [DealerTripleProvider(p, n, dealer.seed_for(p), dealer.correction) for p in range(n)]
    def res(triples):
        return [(a, b, resolve(c)) for a, b, c in triples]

    mm = res([pv.matmul_triple("t1", (4, 5), (5, 3)) for pv in provs])
    a, b, c = (ring.reconstruct([t[i] for t in mm]) for i in range(3))
    assert np.array_equal(c, ring_matmul(a, b))
    cv = res([pv.conv_triple("t2", (1, 2, 6, 6), (3, 2, 3, 3), 1, 1) for pv in provs])
    a, b, c = (ring.reconstruct([t[i] for t in cv]) for i in range(3))
    assert np.array_equal(c, ring_conv2d(a, b, 1, 1))
    el = res([pv.mul_triple("t3", (7,)) for pv in provs])
    fx = res([pv.matmul_triple("t6", (2, 5), (5, 3), b_label="w") for pv in provs])
    fx2 = res([pv.matmul_triple("t7", (2, 5), (5, 3), b_label="w") for pv in provs])
    for t in (fx, fx2):
        a, b, c = (ring.reconstruct([x[i] for x in t]) for i in range(3))
        assert np.array_equal(c, ring_matmul(a, b))
    # a fixed mask is the same B every time; A stays fresh
    assert np.array_equal(fx[0][1], fx2[0][1]) and not np.array_equal(fx[0][0], fx2[0][0])
    assert np.array_equal(ring.reconstruct([x[1] for x in fx]),
                          ring.reconstruct([pv.fixed_mask("w", (5, 3)) for pv in provs]))
    a, b, c = (ring.reconstruct([t[i] for t in el]) for i in range(3))
    assert np.array_equal(c, a * b)
    tr = [pv.trunc_pair("t4", (9,)) for pv in provs]
    assert np.array_equal(ring.reconstruct([t[1] for t in tr]), ring.wrap_count([t[0] for t in tr]))
    ms = ring.reconstruct([pv.positive_masks("t5", 4) for pv in provs])
    assert np.array_equal(ms[0] * ms[0], ms[1] * ms[2]) and (ms[1] > 0).all()
    # dealer traffic: only the last party received anything
    assert provs[-1].fetches == 7 and all(pv.fetches == 0 for pv in provs[:-1])


@pytest.mark.parametrize("when", ["before-first-round", "mid-protocol"])
@pytest.mark.parametrize("kind", TRANSPORT_KINDS)
@pytest.mark.parametrize("n", [2, 3])
def test_node_disappearing_fails_cleanly_on_all_nodes(kind, n, when, tmp_path):
    transports = make_transports(kind, n, tmp_path, timeout=5.0)
    c = LocalCluster(n, transports)
    x = _shares(RNG.random((1, 1, 28, 28)), n)
    model = random_model(SMALL_SPEC, (1, 28, 28), seed=1)
    nodes = node_models(model, n, shared=False)

    def body(s, p):
        if p == n - 1:
            if when == "mid-protocol":  # first block done (one mask-recovery round), then gone
                layers = nodes[p].layers
                y = s.conv_public(x[p], layers[0].weight, layers[0].bias)
                s.mask_recover(y, 16 + nodes[p].weight_frac_bits, layers[1:3])
            s.t.close()  # the node vanishes: links closed, no abort sent
            raise ProtocolError("gone")
        return s.infer(nodes[p], x[p])

    errors = []

    def guarded(p, t):
        try:
            return body_runner(p, t)
        except ProtocolError as exc:
            errors.append((p, str(exc)))
            return None

    sid = "dead-session"

    def body_runner(p, t):
        from mpc.engine.protocol import Session
        t.begin(sid)
        return body(Session(t, c.providers[p], sid, b"s" * 32), p)

    run_parties(transports, guarded, timeout=30)
    assert sorted(p for p, _ in errors) == list(range(n))
    assert all(any(w in m for w in ("disconnected", "gone", "aborted", "is down")) for _, m in errors)
    c.close()


def test_weights_masked_once_give_same_features_with_less_traffic():
    model = random_model(SMALL_SPEC, (1, 28, 28), seed=8)
    x = RNG.random((1, 1, 28, 28))
    c = LocalCluster(2)
    nodes = node_models(model, 2, shared=True)
    masked = c.run(lambda s, p: s.mask_weights(nodes[p]))
    assert all(set(m) == {0, 3, 7} for m in masked)
    xs = _shares(x, 2)
    before = c.transports[0].stats.snapshot()
    per_inference = c.run(lambda s, p: s.infer(nodes[p], xs[p]))
    plain_bytes = c.transports[0].stats.since(before).bytes_sent
    before = c.transports[0].stats.snapshot()
    reused = c.run(lambda s, p: s.infer(nodes[p], xs[p], masked[p]))
    reused_bytes = c.transports[0].stats.since(before).bytes_sent
    ref = plain_forward(model, x)
    for out in (per_inference, reused):
        assert np.abs(ring.decode(ring.reconstruct(out)) - ref).max() < 1e-3
    assert reused_bytes < plain_bytes / 2
    c.close()
