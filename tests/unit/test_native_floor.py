"""The floor kernels (enclave/csrc/floor.c): the per-call finite check and the small dense conv,
each against numpy or onnxruntime, and every malformed call refused with ValueError."""

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
    with pytest.raises(ValueError, match="not float32"):
        floor.all_finite(np.zeros(4, np.float64))
    with pytest.raises(ValueError, match="not float32"):
        floor.all_finite(np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="not C-contiguous"):
        floor.all_finite(np.zeros((4, 4), F32).T)
