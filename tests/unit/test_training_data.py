"""The digits data, the held-out split and the augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.training.data import Augmentation, bilinear_matrix, load_split, resize_bilinear, shear_horizontal
from orchestrator.training.metrics import accuracy, verification_metrics
from splitseal.errors import InvalidInputError


def test_split_shapes_ranges_and_stratification() -> None:
    x_train, y_train, x_test, y_test = load_split(16, 0)
    assert x_train.shape == (1437, 1, 16, 16) and x_test.shape == (360, 1, 16, 16)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and x_train.max() > 0.9
    test_counts = np.bincount(y_test, minlength=10)
    assert test_counts.min() >= 35 and test_counts.max() <= 37  # ~20% of each class


def test_split_is_a_function_of_the_seed() -> None:
    a, b = load_split(16, 0), load_split(16, 0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    other = load_split(16, 1)
    assert not np.array_equal(a[3], other[3])
    # train and test are disjoint: no test image appears among the training images
    x_train, _, x_test, _ = load_split(8, 0)
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    overlap = sum(row.tobytes() in train_rows for row in x_test.reshape(len(x_test), -1))
    assert overlap <= 3  # a handful of the 8x8 digits are pixel-identical duplicates in the data


def test_bilinear_resize() -> None:
    m = bilinear_matrix(8, 16)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    flat = np.full((2, 8, 8), 0.25)
    np.testing.assert_allclose(resize_bilinear(flat, 16), 0.25)
    ramp = np.tile(np.arange(8, dtype=float), (8, 1))[None]
    up = resize_bilinear(ramp, 16)[0, 0]
    assert (np.diff(up) >= 0).all() and up[0] == 0.0 and up[-1] == 7.0
    with pytest.raises(InvalidInputError):
        load_split(2, 0)


def test_augmentation_flip_and_shear() -> None:
    x = np.random.default_rng(0).random((4, 1, 6, 6)).astype(np.float32)
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(Augmentation(flip_prob=0.0, max_shear=0.0).apply(x, rng), x)
    np.testing.assert_array_equal(Augmentation(flip_prob=1.0, max_shear=0.0).apply(x, rng), x[..., ::-1])
    sheared = shear_horizontal(x, np.full(4, 0.4))
    assert sheared.shape == x.shape and not np.allclose(sheared, x)
    # integer shifts of whole rows: row y moves by k*(y - centre) pixels, zero fill at the edge
    img = np.zeros((1, 1, 3, 5), dtype=np.float32)
    img[0, 0, 0, 2] = 1.0
    out = shear_horizontal(img, np.array([1.0]))  # row 0 samples column x - 1
    assert out[0, 0, 0, 3] == pytest.approx(1.0) and out[0, 0, 0].sum() == pytest.approx(1.0)
    with pytest.raises(InvalidInputError):
        Augmentation(flip_prob=1.5)


def test_metrics() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert accuracy(np.eye(3)[[0, 0, 1, 1, 2, 1]], labels) == pytest.approx(5 / 6)
    vectors = np.eye(3)[labels] + 0.01 * np.random.default_rng(0).standard_normal((6, 3))
    m = verification_metrics(vectors, labels)
    assert m.roc_auc == 1.0 and m.eer == 0.0 and m.genuine_pairs == 3 and m.impostor_pairs == 12
    assert m.far == 0.0 and m.frr == 0.0
    noise = verification_metrics(np.random.default_rng(1).standard_normal((60, 8)), np.arange(60) % 3)
    assert 0.3 < noise.roc_auc < 0.7 and noise.eer > 0.3
