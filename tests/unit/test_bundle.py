"""The transfer bundle of a cut crossed by several tensors (splitseal.protocol.bundle): the layout
docs/PROTOCOL.md gives, a round trip, and every malformed case refused with what was wrong."""

from __future__ import annotations

import numpy as np
import pytest

from splitseal.errors import InvalidInputError
from splitseal.protocol import bundle

SPECS = [("skip", (None, 2, 3)), ("main", (None, 4))]


def test_rows_are_each_tensor_flattened_in_head_input_order():
    rng = np.random.default_rng(4)
    skip, main = rng.standard_normal((3, 2, 3)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    packed = bundle.pack([skip, main])
    assert packed.shape == (3, 10) and bundle.bundle_shape(SPECS) == (None, 10)
    np.testing.assert_array_equal(packed[1], np.concatenate([skip[1].reshape(-1), main[1]]))
    parts = bundle.unpack(packed, SPECS)
    np.testing.assert_array_equal(parts["skip"], skip)
    np.testing.assert_array_equal(parts["main"], main)


def test_tensors_without_a_shared_batch_are_refused():
    with pytest.raises(InvalidInputError, match=r"leading dimensions \[\[2\], \[3\]\]"):
        bundle.pack([np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32)])
    with pytest.raises(InvalidInputError, match=r"different leading dimensions"):
        bundle.bundle_shape([("a", (None, 4)), ("b", (8, 4))])


def test_a_bundle_of_the_wrong_width_or_rank_is_refused():
    with pytest.raises(InvalidInputError, match=r"does not hold 2 tensors of \[6, 4\] elements per row"):
        bundle.unpack(np.zeros((3, 9), np.float32), SPECS)
    with pytest.raises(InvalidInputError, match=r"expected \(B, 10\)"):
        bundle.unpack(np.zeros((30,), np.float32), SPECS)


def test_a_crossing_tensor_with_a_dynamic_inner_dimension_cannot_be_bundled():
    with pytest.raises(InvalidInputError, match=r"'seq' has shape \[None, None, 4\]"):
        bundle.row_sizes([("seq", (None, None, 4))])
