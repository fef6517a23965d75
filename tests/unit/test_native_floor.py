"""The floor kernels (enclave/csrc/floor.c): the per-call finite check and the small dense conv
(with its Relu and spatial mean), each against numpy or onnxruntime, and every malformed call
refused with ValueError."""

from __future__ import annotations

import numpy as np
import pytest

from enclave import native

F32 = np.float32


@pytest.fixture(scope="module")
def floor():
    return native.load("floor")


def test_all_finite_finds_every_non_finite_value_at_any_position(floor):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(1031).astype(F32)
    assert floor.all_finite(x) and floor.all_finite(x.reshape(1031, 1)) and floor.all_finite(x[:0])
    big = np.finfo(F32)
    assert floor.all_finite(np.array([big.max, -big.max, big.tiny, -0.0, 1e-45], F32))
    for bad in (np.nan, np.inf, -np.inf, -np.nan):
        for pos in (0, 500, 1030):           # the vector body and the tail
            y = x.copy()
            y[pos] = bad
            assert not floor.all_finite(y), (bad, pos)
    # a NaN with a payload and the sign bit set is still a NaN
    assert not floor.all_finite(np.array([0xFFC00001], np.uint32).view(F32))


def test_all_finite_refuses_what_is_not_a_contiguous_float32_buffer(floor):
    with pytest.raises(ValueError, match="wrong item type"):
        floor.all_finite(np.zeros(4, np.float64))
    with pytest.raises(ValueError, match="wrong item type"):
        floor.all_finite(np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="not C-contiguous"):
        floor.all_finite(np.zeros((4, 4), F32).T)


def _packed(w: np.ndarray, block: int = 8) -> np.ndarray:
    m = w.shape[0]
    rows = np.zeros((-(-m // block) * block, w[0].size), F32)
    rows[:m] = w.transpose(0, 2, 3, 1).reshape(m, -1)   # depth (i, j, c): a tap's rows contiguous
    return np.ascontiguousarray(rows.reshape(-1, block, rows.shape[1]).transpose(0, 2, 1))


def _reference_conv(x, w, b, strides, dilations, begin, out):
    """The definition, in float64: every output is its window's sum, positions outside the image 0."""
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    y = np.zeros((n, m) + out)
    for oy in range(out[0]):
        for ox in range(out[1]):
            for i in range(kh):
                for j in range(kw):
                    iy, ix = oy * strides[0] - begin[0] + i * dilations[0], ox * strides[1] - begin[1] + j * dilations[1]
                    if 0 <= iy < h and 0 <= ix < wd:
                        y[:, :, oy, ox] += x[:, :, iy, ix].astype(np.float64) @ w[:, :, i, j].T.astype(np.float64)
    return y + (0 if b is None else b[None, :, None, None])


# (x shape, weight shape, strides, dilations, pads begin, output size): every run width, blocks
# padded or not, stride, dilation, padding reaching past the image on either side
CONVS = [((1, 5, 3, 3), (7, 5, 1, 1), (1, 1), (1, 1), (0, 0), (3, 3)),
         ((2, 3, 4, 4), (16, 3, 3, 3), (1, 1), (1, 1), (1, 1), (4, 4)),
         ((1, 4, 5, 6), (9, 4, 2, 3), (2, 1), (1, 2), (1, 0), (3, 2)),
         ((1, 2, 1, 1), (3, 2, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
         ((3, 6, 7, 5), (20, 6, 3, 1), (2, 2), (2, 1), (2, 0), (3, 3)),
         ((1, 8, 5, 5), (8, 8, 1, 1), (1, 1), (1, 1), (0, 0), (5, 5)),
         # at least 16 channels and a fifth or more of the (position, tap) pairs in the padding: tap
         # by tap (SqueezeNet's 3x3 maps, ResNet's 2x2 in a batch, taps that reach no position,
         # strides and dilations), and one without padding that stays one product
         ((1, 64, 3, 3), (20, 64, 3, 3), (1, 1), (1, 1), (1, 1), (3, 3)),
         ((2, 16, 2, 2), (9, 16, 3, 3), (1, 1), (1, 1), (1, 1), (2, 2)),
         ((1, 16, 1, 1), (5, 16, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
         ((1, 17, 5, 4), (12, 17, 3, 2), (2, 1), (2, 1), (2, 1), (3, 3)),
         ((1, 16, 4, 3), (8, 16, 3, 3), (1, 1), (1, 1), (0, 0), (2, 1))]


@pytest.mark.parametrize("case", CONVS, ids=[f"x{c[0]}-w{c[1]}" for c in CONVS])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_conv_is_the_convolution(floor, case, bias):
    x_shape, w_shape, strides, dilations, begin, out = case
    rng = np.random.default_rng([20261202, CONVS.index(case), bias])
    x = rng.standard_normal(x_shape).astype(F32)
    w = rng.standard_normal(w_shape).astype(F32)
    b = rng.standard_normal(w_shape[0]).astype(F32) if bias else None
    y = np.full((x_shape[0], w_shape[0]) + out, np.nan, F32)
    floor.conv(x, _packed(w), b, y, x_shape, (w_shape[0],) + w_shape[2:], strides, dilations, begin, out)
    np.testing.assert_allclose(y, _reference_conv(x, w, b, strides, dilations, begin, out), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CONVS, ids=[f"x{c[0]}-w{c[1]}" for c in CONVS])
def test_conv_with_relu_and_mean_is_the_relu_and_the_spatial_mean(floor, case):
    """``relu``: max(y, 0), NaN kept; ``mean``: each channel's mean over the positions, bit for bit
    what row_means gives on the stored (relu'd) conv, and the definition's within float32's error."""
    x_shape, w_shape, strides, dilations, begin, out = case
    rng = np.random.default_rng([20261202, 50, CONVS.index(case)])
    x = rng.standard_normal(x_shape).astype(F32)
    w = rng.standard_normal(w_shape).astype(F32)
    b = rng.standard_normal(w_shape[0]).astype(F32)
    n, m = x_shape[0], w_shape[0]
    geometry = (x_shape, (m,) + w_shape[2:], strides, dilations, begin, out)
    plain, relu = (np.full((n, m) + out, np.nan, F32) for _ in range(2))
    floor.conv(x, _packed(w), b, plain, *geometry)
    floor.conv(x, _packed(w), b, relu, *geometry, True)
    assert np.array_equal(relu, np.maximum(plain, F32(0)))
    reference = np.maximum(_reference_conv(x, w, b, strides, dilations, begin, out), 0)
    np.testing.assert_allclose(relu, reference, rtol=1e-5, atol=1e-5)
    means, of_stored = np.full((n, m), np.nan, F32), np.full(n * m, np.nan, F32)
    floor.conv(x, _packed(w), b, means, *geometry, True, True)
    floor.row_means(relu, of_stored, n * m, out[0] * out[1])
    assert np.array_equal(means.ravel().view(np.uint32), of_stored.view(np.uint32))
    np.testing.assert_allclose(means, reference.mean(axis=(2, 3)), rtol=1e-5, atol=1e-5)
    without_relu = np.full((n, m), np.nan, F32)
    floor.conv(x, _packed(w), b, without_relu, *geometry, False, True)
    definition = _reference_conv(x, w, b, strides, dilations, begin, out).mean(axis=(2, 3))
    np.testing.assert_allclose(without_relu, definition, rtol=1e-5, atol=1e-5)
    # a NaN in the image stays NaN through the Relu and the mean of every channel it reaches
    x[0, 0, 0, 0] = np.nan
    floor.conv(x, _packed(w), b, relu, *geometry, True)
    floor.conv(x, _packed(w), b, plain, *geometry)
    assert np.array_equal(np.isnan(relu), np.isnan(plain)) and np.isnan(relu).any()


@pytest.mark.parametrize("case", CONVS, ids=[f"x{c[0]}-w{c[1]}" for c in CONVS])
def test_conv_with_a_clip_is_the_clip(floor, case):
    """(lo, hi): np.minimum(np.maximum(y, lo), hi) bit for bit (ReLU6, one-sided bounds, a NaN
    kept), and with ``mean`` the means of the clipped map as row_means takes them."""
    x_shape, w_shape, strides, dilations, begin, out = case
    rng = np.random.default_rng([20261204, CONVS.index(case)])
    x = (rng.standard_normal(x_shape) * 4).astype(F32)
    w = rng.standard_normal(w_shape).astype(F32)
    b = rng.standard_normal(w_shape[0]).astype(F32)
    n, m = x_shape[0], w_shape[0]
    geometry = (x_shape, (m,) + w_shape[2:], strides, dilations, begin, out)
    x[0, 0, 0, 0] = np.nan
    plain, clipped = (np.full((n, m) + out, np.nan, F32) for _ in range(2))
    floor.conv(x, _packed(w), b, plain, *geometry)
    assert np.isnan(plain).any()
    for lo, hi in [(0.0, 6.0), (-np.inf, 0.5), (-1.5, np.inf), (2.0, 1.0)]:
        floor.conv(x, _packed(w), b, clipped, *geometry, False, False, (lo, hi))
        expected = np.minimum(np.maximum(plain, F32(lo)), F32(hi))
        assert np.array_equal(clipped.view(np.uint32), expected.view(np.uint32)), (lo, hi)
        means, of_stored = np.full((n, m), np.nan, F32), np.full(n * m, np.nan, F32)
        floor.conv(x, _packed(w), b, means, *geometry, False, True, (lo, hi))
        floor.row_means(clipped, of_stored, n * m, out[0] * out[1])
        assert np.array_equal(means.ravel().view(np.uint32), of_stored.view(np.uint32)), (lo, hi)
    for clip, match in [((0.0, 6.0, 1.0), "two floats"), ([0.0, 6.0], "two floats"), (("a", 1.0), "two floats")]:
        with pytest.raises(ValueError, match=match):
            floor.conv(x, _packed(w), b, clipped, *geometry, False, False, clip)
    with pytest.raises(ValueError, match="relu and a clip"):
        floor.conv(x, _packed(w), b, clipped, *geometry, True, False, (0.0, 6.0))


def test_conv_refuses_malformed_calls(floor):
    x, w, y = np.zeros((1, 2, 3, 3), F32), _packed(np.zeros((3, 2, 1, 1), F32)), np.zeros((1, 3, 3, 3), F32)
    geometry = [(1, 2, 3, 3), (3, 1, 1), (1, 1), (1, 1), (0, 0), (3, 3)]
    floor.conv(x, w, None, y, *geometry)

    def call(*, x=x, w=w, b=None, y=y, at=None, value=None):
        g = list(geometry)
        if at is not None:
            g[at] = value
        floor.conv(x, w, b, y, *g)

    for kwargs, match in [
        (dict(x=np.zeros((1, 2, 3, 4), F32)), "x: 24 items, expected 18"),
        (dict(w=np.zeros(15, F32)), "packed weight: 15 items, expected 16"),
        (dict(b=np.zeros(2, F32)), "bias: 2 items, expected 3"),
        (dict(y=np.zeros((1, 3, 3, 2), F32)), "y: 18 items, expected 27"),
        (dict(y=np.zeros(27, np.float64)), "y: wrong item type"),
        (dict(at=2, value=(0, 1)), "must be positive"),
        (dict(at=3, value=(1, -1)), "must be positive"),
        (dict(at=4, value=(-1, 0)), "pads >= 0"),
        (dict(at=5, value=(0, 3)), "must be positive"),
        (dict(at=1, value=(3, 1 << 40, 1 << 40)), "overflow|must be positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            call(**kwargs)
    # with `mean`, y holds one value per channel and image: the full map is refused, and so is less
    floor.conv(x, w, None, np.zeros(3, F32), *geometry, True, True)
    for y_mean, match in [(y, "y: 27 items, expected 3"), (np.zeros(2, F32), "y: 2 items, expected 3")]:
        with pytest.raises(ValueError, match=match):
            floor.conv(x, w, None, y_mean, *geometry, False, True)
    with pytest.raises(TypeError):
        floor.conv(x, w, None, y, *geometry, True, True, None, True)
    with pytest.raises(ValueError, match="not C-contiguous"):
        call(x=np.zeros((1, 2, 3, 6), F32)[..., ::2])
    read_only = np.zeros((1, 3, 3, 3), F32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        call(y=read_only)


def test_row_means_are_the_means_and_refuse_malformed_calls(floor):
    rng = np.random.default_rng(11)
    for rows, size in [(1, 1), (3, 9), (100, 49), (2, 7)]:
        x = rng.standard_normal((rows, size)).astype(F32)
        y = np.full(rows, np.nan, F32)
        floor.row_means(x, y, rows, size)
        np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=1), rtol=1e-5, atol=1e-6)
    for args, match in [((np.zeros(6, F32), np.zeros(2, F32), 2, 4), "x: 6 items, expected 8"),
                        ((np.zeros(8, F32), np.zeros(3, F32), 2, 4), "y: 3 items, expected 2"),
                        ((np.zeros(0, F32), np.zeros(0, F32), 0, 4), "must be positive")]:
        with pytest.raises(ValueError, match=match):
            floor.row_means(*args)
