"""Fixed point, sharing, truncation and exact ring matmul (no communication)."""

from __future__ import annotations

import numpy as np
import pytest

from mpc.engine import ring
from mpc.engine.matmul import conv2d_float, ring_conv2d, ring_conv2d_public, ring_matmul, ring_matmul_public
from splitseal.errors import InvalidInputError

RNG = np.random.default_rng(7)


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(object) @ b.astype(object)) % (1 << 64)


def test_encode_decode_roundtrip_within_half_ulp():
    x = RNG.standard_normal(1000) * 100
    assert np.abs(ring.decode(ring.encode(x)) - x).max() <= 0.5 / 2 ** 16 + 1e-12


def test_encode_rejects_nan_and_huge():
    with pytest.raises(InvalidInputError):
        ring.encode(np.array([np.nan]))
    with pytest.raises(InvalidInputError):
        ring.encode(np.array([2.0 ** 50]))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_shares_reconstruct_and_look_uniform(n):
    x = ring.encode(RNG.random((64, 64)))
    shares = ring.share(x, n)
    assert np.array_equal(ring.reconstruct(shares), x)
    for s in shares:
        assert not np.array_equal(s, x)
        # a uniform 64-bit share has its top bit set about half the time; the encoded input never
        top = (s >> np.uint64(63)).mean()
        assert 0.45 < top < 0.55
    assert (x >> np.uint64(63)).mean() == 0


def test_share_needs_two_parties():
    with pytest.raises(InvalidInputError):
        ring.share(ring.encode(np.zeros(3)), 1)


def test_local_truncation_two_parties_within_one_ulp():
    x = RNG.standard_normal(5000) * 50
    s0, s1 = ring.share(ring.encode(x, 32), 2)
    t = ring.reconstruct([ring.truncate_local_2pc(s0, 0), ring.truncate_local_2pc(s1, 1)])
    assert np.abs(ring.decode(t) - x).max() <= 2 / 2 ** 16


@pytest.mark.parametrize("n", [2, 3, 4])
def test_dealer_truncation_within_n_ulp(n):
    x = RNG.standard_normal(5000) * 50
    shares = ring.share(ring.encode(x, 32), n)
    rs = [ring.random_ring(x.shape) for _ in range(n)]
    theta = ring.wrap_count(rs)
    ts = ring.share(theta, n)
    outs = [ring.truncate_with_dealer_share(s, r, t) for s, r, t in zip(shares, rs, ts)]
    zs = [z for z, _ in outs]
    parts = [p for _, p in outs]
    parts[0] = ring.truncate_with_dealer_finish(parts[0], zs)
    assert np.abs(ring.decode(ring.reconstruct(parts)) - x).max() <= (n + 1) / 2 ** 16


@pytest.mark.parametrize("k", [1, 27, 511, 512, 513, 700])
def test_ring_matmul_exact(k):
    """Both limb splits (3 limbs up to k = 512, 16-bit limbs above), at their edges and with the
    largest values (all bits set), where a float sum would first lose a bit."""
    a = RNG.integers(0, 2 ** 64, (33, k), dtype=np.uint64)
    b = RNG.integers(0, 2 ** 64, (k, 17), dtype=np.uint64)
    assert np.array_equal(ring_matmul(a, b).astype(object), _exact(a, b))
    ones_a = np.full((3, k), 2 ** 64 - 1, dtype=np.uint64)
    ones_b = np.full((k, 2), 2 ** 64 - 1, dtype=np.uint64)
    assert np.array_equal(ring_matmul(ones_a, ones_b).astype(object), _exact(ones_a, ones_b))
    # the limb pattern that maximises every 3-limb partial sum: each limb at its largest value
    top = np.uint64((2 ** 22 - 1) | ((2 ** 21 - 1) << 22) | ((2 ** 21 - 1) << 43))
    assert np.array_equal(ring_matmul(np.full((2, k), top), np.full((k, 2), top)).astype(object),
                          _exact(np.full((2, k), top), np.full((k, 2), top)))


def test_ring_matmul_public_exact_and_fallback():
    a = RNG.integers(0, 2 ** 64, (20, 300), dtype=np.uint64)
    from mpc.engine.matmul import PublicOperand

    small = RNG.integers(-2 ** 20, 2 ** 20, (300, 9)).astype(np.int64)  # 3 limbs of the shares
    mid = RNG.integers(-2 ** 26, 2 ** 26, (300, 9)).astype(np.int64)  # 4 limbs of 16 bits
    big = RNG.integers(-2 ** 40, 2 ** 40, (300, 9)).astype(np.int64)  # takes the fallback
    assert [(PublicOperand(w).count, PublicOperand(w).fast) for w in (small, mid, big)] == \
        [(3, True), (4, True), (4, False)]
    for w in (small, mid, big):
        assert np.array_equal(ring_matmul_public(a, w).astype(object), _exact(a, w))
        assert np.array_equal(ring_matmul_public(np.full((2, 300), 2 ** 64 - 1, dtype=np.uint64), w).astype(object),
                              _exact(np.full((2, 300), 2 ** 64 - 1, dtype=np.uint64), w))


def test_conv_on_shares_matches_float():
    x = RNG.random((2, 3, 12, 12))
    w = RNG.standard_normal((4, 3, 3, 3)) * 0.3
    shares = ring.share(ring.encode(x), 3)
    y = ring.reconstruct([ring_conv2d_public(s, ring.encode_int(w), stride=1, padding=1) for s in shares])
    assert np.abs(ring.decode(y, 32) - conv2d_float(x, w, padding=1)).max() < 1e-3
    # full ring convolution agrees with the public-kernel path
    wr = ring.encode(w)
    assert np.array_equal(ring_conv2d(shares[0], wr, 2, 1), ring_conv2d_public(shares[0], wr.view(np.int64), 2, 1))
    # a ring kernel of more than 512 taps (16-bit limbs) against the exact product of its im2col
    from mpc.engine.matmul import im2col

    xr = RNG.integers(0, 2 ** 64, (1, 64, 6, 6), dtype=np.uint64)
    wr = RNG.integers(0, 2 ** 64, (5, 64, 3, 3), dtype=np.uint64)  # 576 taps
    cols, ho, wo = im2col(xr, 3, 3, 1, 1)
    ref = _exact(cols, wr.reshape(5, -1).T)
    got = ring_conv2d(xr, wr, 1, 1).transpose(0, 2, 3, 1).reshape(-1, 5)
    assert np.array_equal(got.astype(object), ref)


def test_prg_is_deterministic_per_key_and_label():
    k = b"k" * 32
    assert np.array_equal(ring.Prg(k).ring("a", 10), ring.Prg(k).ring("a", 10))
    assert not np.array_equal(ring.Prg(k).ring("a", 10), ring.Prg(k).ring("b", 10))
