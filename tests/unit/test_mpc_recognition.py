"""Similarity on shares: cosine scores revealed only to the aggregator, for every transport and
N = 2, 3; decisions identical to plaintext."""

from __future__ import annotations

import numpy as np
import pytest

from mpc.engine import ring
from mpc.engine.recognition import cosine_scores, decide_identify, decide_verify
from tests.support.mpc_local import LocalCluster
from tests.support.mpc_transports import TRANSPORT_KINDS, make_transports

RNG = np.random.default_rng(3)


@pytest.fixture(params=[(k, n) for k in TRANSPORT_KINDS for n in (2, 3)], ids=lambda p: f"{p[0]}-N{p[1]}")
def cluster(request, tmp_path):
    c = LocalCluster(request.param[1], make_transports(request.param[0], request.param[1], tmp_path))
    yield c
    c.close()


def test_cosine_scores_match_plaintext_and_only_aggregator_learns_them(cluster):
    n = cluster.n
    probe = RNG.standard_normal(64) * 2
    gallery = RNG.standard_normal((5, 64)) * 2
    gallery[2] = probe * 1.7 + RNG.standard_normal(64) * 0.1  # a near match
    ps, gs = ring.share(ring.encode(probe), n), ring.share(ring.encode(gallery), n)
    out = cluster.run(lambda s, p: cosine_scores(s, ps[p], gs[p]))
    ref = gallery @ probe / (np.linalg.norm(gallery, axis=1) * np.linalg.norm(probe))
    assert np.abs(out[0] - ref).max() < 1e-3
    assert all(o is None for o in out[1:])
    d = decide_identify(out[0], [f"s{i}" for i in range(5)], 0.9)
    assert d.accepted and d.subject == "s2"
    assert not decide_identify(out[0], [f"s{i}" for i in range(5)], 0.9999).accepted
    assert decide_verify(out[0][2:3], "s2", 0.9).accepted


def test_scores_are_masked_on_the_wire(monkeypatch):
    """The aggregator receives u, v, w with random multiplicative masks, never the bare inner
    products or squared norms."""
    from mpc.engine.protocol import Session

    learnt = []
    original = Session.reveal_to

    def spy(self, target, *xs):
        out = original(self, target, *xs)
        if out is not None:
            learnt.append(out[0])
        return out

    monkeypatch.setattr(Session, "reveal_to", spy)
    c = LocalCluster(2)
    probe = np.full(16, 0.5)
    gallery = np.full((1, 16), 0.25)  # <a,b> = 2, <a,a> = 4, <b,b> = 1
    ps, gs = ring.share(ring.encode(probe), 2), ring.share(ring.encode(gallery), 2)
    out = c.run(lambda s, p: cosine_scores(s, ps[p], gs[p]))
    c.close()
    assert abs(out[0][0] - 1.0) < 1e-3
    (u, v, w), = [ring.decode(x)[:, 0] for x in learnt]
    assert v / 4.0 >= 2 ** 16 and w / 1.0 >= 2 ** 16 and u / 2.0 >= 2 ** 16  # masked by rho^2, sigma^2, rho*sigma
    rho, sigma = np.sqrt(v / 4.0), np.sqrt(w / 1.0)
    assert abs(u / 2.0 - rho * sigma) / (rho * sigma) < 1e-3
