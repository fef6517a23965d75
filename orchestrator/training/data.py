"""The handwritten digits data, preprocessed as the split-inference text describes.

Source: the UCI handwritten digits that scikit-learn ships inside its package
(``sklearn.datasets.load_digits``: 1,797 images of 8x8 pixels, values 0..16, ten classes), so
nothing is downloaded. Preprocessing: pixel values normalised to 0..1, images resized to the
model's input size by bilinear interpolation (half-pixel centres, as ONNX ``Resize`` with
``coordinate_transformation_mode=half_pixel`` does), and, for training only, augmentation by
random horizontal flip and random horizontal shear.

Everybody who evaluates a reference model must use the same held-out split, so the split is a
pure function of ``seed``: :func:`load_split` is what other areas import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from splitseal.errors import InvalidInputError

log = logging.getLogger(__name__)

#: Input size (pixels per side) of the reference models.
DEFAULT_INPUT_SIZE = 16
#: Seed of the reference split and of the reference training runs.
DEFAULT_SEED = 0
#: Fraction of the images held out for testing (stratified by class).
TEST_FRACTION = 0.2
#: Number of classes of the digits data.
NUM_CLASSES = 10
#: Largest raw pixel value of the digits data (they are 4-bit counts).
_RAW_MAX = 16.0


def bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """The (dst, src) matrix that resamples a 1-D signal bilinearly.

    Half-pixel centres with edge clamping; applying it to both axes of an image is separable
    bilinear resizing, done as two small matmuls instead of a per-pixel loop.
    """
    if src < 1 or dst < 1:
        raise InvalidInputError(f"resize sizes must be positive, got src={src} dst={dst}")
    m = np.zeros((dst, src), dtype=np.float64)
    scale = src / dst
    for i in range(dst):
        pos = (i + 0.5) * scale - 0.5
        pos = min(max(pos, 0.0), src - 1.0)
        lo = int(np.floor(pos))
        hi = min(lo + 1, src - 1)
        frac = pos - lo
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a stack of square images (N, H, W) to (N, size, size), bilinearly."""
    if images.ndim != 3:
        raise InvalidInputError(f"expected images of shape (N, H, W), got {images.shape}")
    rh = bilinear_matrix(images.shape[1], size)
    rw = bilinear_matrix(images.shape[2], size)
    return np.einsum("ih,nhw,jw->nij", rh, images.astype(np.float64), rw)


@lru_cache(maxsize=8)
def _load_all(input_size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images / _RAW_MAX  # 0..1
    if input_size != images.shape[1]:
        images = resize_bilinear(images, input_size)
    x = np.clip(images, 0.0, 1.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_all(input_size: int = DEFAULT_INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images as float32 (N, 1, size, size) in 0..1 and their int64 labels."""
    if not 4 <= int(input_size) <= 128:
        raise InvalidInputError(f"input_size must be between 4 and 128 pixels, got {input_size}")
    x, y = _load_all(int(input_size))
    return x.copy(), y.copy()


def split_indices(seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into :func:`load_all`) of the stratified train and test parts for ``seed``.

    Sorted, so the order of the returned arrays never depends on the shuffling inside.
    """
    from sklearn.model_selection import train_test_split

    _, y = _load_all(8)
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=TEST_FRACTION, stratify=y, random_state=int(seed))
    return np.sort(train), np.sort(test)


def load_split(input_size: int = DEFAULT_INPUT_SIZE, seed: int = DEFAULT_SEED
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The held-out split the reference models were trained and evaluated on.

    Returns ``(x_train, y_train, x_test, y_test)``: float32 images of shape
    (N, 1, input_size, input_size) with values in 0..1, and int64 labels 0..9. The same
    ``seed`` always gives the same split (1,437 train / 360 test images).
    """
    x, y = load_all(input_size)
    train, test = split_indices(seed)
    return x[train], y[train], x[test], y[test]


@dataclass(frozen=True)
class Augmentation:
    """Random training-time distortions (the patent's horizontal flip and shear).

    ``flip_prob``: probability that an image is mirrored left-right. ``max_shear``: the shear
    factor k is drawn uniformly from [-max_shear, max_shear]; row y is shifted horizontally by
    k * (y - centre) pixels, sampled bilinearly with zero fill.
    """

    flip_prob: float = 0.5
    max_shear: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_prob <= 1.0:
            raise InvalidInputError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if not 0.0 <= self.max_shear <= 2.0:
            raise InvalidInputError(f"max_shear must be in [0, 2], got {self.max_shear}")

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return an augmented copy of the batch ``x`` (N, C, H, W)."""
        n = x.shape[0]
        flip = rng.random(n) < self.flip_prob
        shear = rng.uniform(-self.max_shear, self.max_shear, size=n)
        out = x.copy()
        out[flip] = out[flip][..., ::-1]
        return shear_horizontal(out, shear)


def shear_horizontal(x: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Shear each image of ``x`` (N, C, H, W) horizontally by its factor, bilinear, zero fill."""
    n, c, h, w = x.shape
    centre = (h - 1) / 2.0
    shift = factors[:, None] * (np.arange(h)[None, :] - centre)  # (N, H)
    pos = np.arange(w)[None, None, :] + shift[:, :, None]  # (N, H, W) source columns
    lo = np.floor(pos).astype(np.int64)
    frac = (pos - lo).astype(x.dtype)
    out = np.zeros_like(x)
    rows = np.arange(h)[None, :, None]
    batch = np.arange(n)[:, None, None]
    for offset, weight in ((0, 1.0 - frac), (1, frac)):
        cols = lo + offset
        valid = (cols >= 0) & (cols < w)
        safe = np.clip(cols, 0, w - 1)
        for ch in range(c):
            sampled = x[batch, ch, rows, safe]
            out[:, ch] += np.where(valid, sampled * weight, 0.0).astype(x.dtype)
    return out
