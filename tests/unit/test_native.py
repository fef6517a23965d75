"""The enclave's compiled kernels: found by the digest of their source, refused when stale, and
checking every table they are given (enclave/native.py, enclave/csrc/*.c)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from enclave import native
from splitseal.errors import ConfigError


def test_the_build_and_the_loader_agree_on_the_digest():
    for name in native.kernel_names():
        shell = subprocess.run(f"cat enclave/csrc/cflags enclave/csrc/*.h enclave/csrc/{name}.c | sha256sum", shell=True,
                               cwd=native.PROJECT_DIR, capture_output=True, text=True, check=True)
        assert shell.stdout[:16] == native.digest(name)
        assert native.load(name).__name__ == name
    assert native.header_names() == ["buffers.h", "exp.h", "softmax.h"]


def test_a_kernel_not_built_from_this_source_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "BUILD_DIR", tmp_path)
    # an object under another digest (a build of other code) is never picked up
    (tmp_path / "trees-0000000000000000.so").write_bytes(b"not this source")
    with pytest.raises(ConfigError, match="run scripts/setup"):
        native.load.__wrapped__("trees")
    with pytest.raises(ConfigError, match="no kernel source"):
        native.load.__wrapped__("nonexistent")


def _forest_args(n_features=3):
    # one tree: node 0 tests feature 1 <= 0.5; true -> leaf 1 (weight 2), false -> leaf 2 (weight 7)
    roots = np.array([0], np.int64)
    feats = np.array([1, 0, 0], np.int64)
    thresholds = np.array([0.5, 0, 0], np.float32)
    codes = np.array([0, 6, 6], np.uint8)
    nxt = np.array([2, 1, 2, 1, 1, 2], np.int64)
    table = np.array([0, 2, 7], np.float64)
    has = np.array([0, 1, 1], np.uint8)
    return [roots, feats, thresholds, codes, nxt, None, table, has, n_features]


def test_the_tree_walker_sums_the_reached_leaves():
    trees = native.load("trees")
    forest = trees.compile(*_forest_args())
    x = np.array([[0, 0.5, 0], [0, 0.6, 0], [0, np.nan, 0]], np.float32)
    scores = np.empty(3)
    trees.walk(forest, x, 3, scores)
    assert scores.tolist() == [2.0, 7.0, 7.0]
    args = _forest_args()
    args[5] = np.array([1, 0, 0], np.uint8)       # NaN goes the true way at node 0
    trees.walk(trees.compile(*args), x, 3, scores)
    assert scores.tolist() == [2.0, 7.0, 2.0]


@pytest.mark.parametrize("position,bad,match", [
    (1, np.array([3, 0, 0], np.int64), "feature is out of range"),
    (4, np.array([2, 1, 2, 9, 1, 2], np.int64), "branch is out of range"),
    (0, np.array([5], np.int64), "root is out of range"),
    (3, np.array([0, 7, 6], np.uint8), "mode is out of range"),
    (2, np.array([0.5, 0, 0], np.float64), "thresholds: wrong item type"),
    (4, np.array([2, 1, 2], np.int64), "next: 3 items, expected 6"),
    (7, np.array([0, 1], np.uint8), "has: 2 items, expected 3"),
])
def test_the_tree_walker_refuses_malformed_tables(position, bad, match):
    args = _forest_args()
    args[position] = bad
    with pytest.raises(ValueError, match=match):
        native.load("trees").compile(*args)


def test_the_tree_walker_refuses_buffers_of_the_wrong_size():
    trees = native.load("trees")
    forest = trees.compile(*_forest_args())
    with pytest.raises(ValueError, match="x: 4 items, expected 3"):
        trees.walk(forest, np.zeros(4, np.float32), 1, np.empty(1))
    with pytest.raises(ValueError, match="scores: 2 items, expected 1"):
        trees.walk(forest, np.zeros(3, np.float32), 1, np.empty(2))
    with pytest.raises(ValueError, match="invalid PyCapsule"):
        trees.walk(object(), np.zeros(3, np.float32), 1, np.empty(1))
    with pytest.raises(ValueError):
        trees.walk(forest, np.zeros(3, np.float32), 1, np.empty(1).view(np.int64))


def test_the_classifier_kernel_checks_its_outputs_and_base():
    trees = native.load("trees")
    args = _forest_args()
    args[6], args[7] = np.array([0, 2, 7, 0, 0, 0], np.float64), np.zeros(6, np.uint8)   # two classes
    forest = trees.compile(*args)
    x = np.array([[0, 0.5, 0]], np.float32)
    label, probs = np.empty(1, np.int64), np.empty(2, np.float32)
    trees.classify(forest, x, 1, np.array([-1.0]), 0, 1, np.array([4, 9]), label, probs)
    assert label.tolist() == [9] and probs.tolist() == [0.0, 1.0]     # s = 2 - 1 = 1 > 0.5
    with pytest.raises(ValueError, match="base: 3 values for 2 classes"):
        trees.classify(forest, x, 1, np.zeros(3), 0, 1, np.array([4, 9]), label, probs)
    with pytest.raises(ValueError, match="probs_out: 1 items, expected 2"):
        trees.classify(forest, x, 1, np.zeros(0), 0, 1, np.array([4, 9]), label, np.empty(1, np.float32))
    with pytest.raises(ValueError, match="post transform out of range"):
        trees.classify(forest, x, 1, np.zeros(0), 3, 1, np.array([4, 9]), label, probs)
