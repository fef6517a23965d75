"""The capture terminal: normalise an image, check it is a usable capture, split it into shares.

Steps, as the patent's terminal does them:

1. read the capture (``.npy`` array, or with Pillow a PNG of any colour type and depth, a JPEG,
   or a PGM/PPM);
2. prepare the model's input, by the cluster's *capture* kind: ``unit`` (the digits models)
   normalises values to 0..1 (integers divided by their type's maximum), resizes (bilinear,
   half-pixel centres) to the model's H x W and maps channels to the model's C (gray repeated,
   colour averaged); ``face`` (SFace) finds the face with YuNet, aligns its five landmarks onto
   the ArcFace template and gives 3 x 112 x 112 in 0..255 (:class:`mpc.client.faces.FaceCapture`),
   refusing a capture without a face;
3. check validity with a pluggable check (the patent checks a face is present before sharing;
   the default rejects blank, constant, non-finite or wrongly shaped images);
4. encode in fixed point in Z_2^64 and split into N uniformly random additive shares, one per
   node. The terminal keeps nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from mpc.engine.ring import encode, share
from splitseal.errors import InvalidInputError

ValidityCheck = Callable[[np.ndarray], None]
Prepare = Callable[[np.ndarray, tuple[int, int, int]], np.ndarray]
CAPTURES = ("unit", "face")


# --- reading -------------------------------------------------------------------------------

#: Image formats a capture may come in (Pillow's names): PNG (greyscale, palette, RGB(A), 8 or
#: 16 bit, interlaced or not), JPEG, and PGM/PPM (binary or plain, any maxval).
IMAGE_FORMATS = ("PNG", "JPEG", "PPM")

#: Pillow modes and the value of their white: 8-bit modes, 16-bit greyscale ("I" for 16-bit PGM).
_GREY_MODES = {"L": 255.0, "LA": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0,
               "I": 65535.0}


def read_image(path: str | Path) -> np.ndarray:
    """Read a capture as floats in 0..1, (H, W) grey or (H, W, 3) colour (alpha dropped, a palette
    expanded), or, for .npy, the array as stored. Anything Pillow cannot read as one of
    :data:`IMAGE_FORMATS` is an :class:`InvalidInputError` that names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"image {path} does not exist (or is not a file)")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidInputError(f"image {path} is not a readable .npy array ({exc})") from None
        if array.dtype.kind not in "biuf":
            raise InvalidInputError(f"image {path}: its values are not numeric (dtype {array.dtype}); give "
                                    "pixel values as integers or floats")
        return array
    from PIL import Image, UnidentifiedImageError  # loaded with the first image, not for --help

    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            image.load()
            return _pixels(image)
    except UnidentifiedImageError:
        raise InvalidInputError(f"image {path}: not a PNG, JPEG or PGM/PPM image; give one of those "
                                "or a .npy array") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # truncated or corrupt data (Pillow reports bad headers as SyntaxError)
        raise InvalidInputError(f"image {path} is not a readable {path.suffix[1:] or 'image'} file ({exc})") \
            from None


def _pixels(image) -> np.ndarray:
    mode = image.mode
    if mode == "1":  # bilevel
        return np.asarray(image, dtype=np.float64)
    if mode in _GREY_MODES:
        grey = image.getchannel(0) if mode == "LA" else image
        return np.clip(np.asarray(grey, dtype=np.float64) / _GREY_MODES[mode], 0.0, 1.0)
    if mode == "P" or mode == "PA":  # palette: its colours (a grey palette gives equal channels)
        image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
    elif mode not in ("RGB", "RGBA"):  # CMYK or YCbCr JPEGs
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float64)[..., :3] / 255.0


def write_pgm(path: str | Path, img: np.ndarray) -> None:
    """Write a (H, W) image in 0..1 as binary PGM (for demos and tests)."""
    a = np.clip(np.rint(np.asarray(img, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    Path(path).write_bytes(f"P5\n{a.shape[1]} {a.shape[0]}\n255\n".encode() + a.tobytes())


# --- normalising and checking ------------------------------------------------------------------

def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) bilinear resampling, half-pixel centres with edge clamping (as ONNX Resize and
    the reference models' training pipeline), so captures are resized the way the model saw."""
    m = np.zeros((dst, src), dtype=np.float64)
    scale = src / dst
    for i in range(dst):
        pos = min(max((i + 0.5) * scale - 0.5, 0.0), src - 1.0)
        lo = int(np.floor(pos))
        hi = min(lo + 1, src - 1)
        m[i, lo] += 1.0 - (pos - lo)
        m[i, hi] += pos - lo
    return m


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of (C, H, W) to (C, h, w)."""
    c, hi, wi = img.shape
    if (hi, wi) == (h, w):
        return img
    return np.einsum("ih,chw,jw->cij", _bilinear_matrix(hi, h), img, _bilinear_matrix(wi, w))


def normalise(img: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A capture as a (C, H, W) float array in 0..1 at the model's size."""
    a = np.asarray(img)
    if a.dtype.kind in "ui":
        a = a.astype(np.float64) / float(np.iinfo(a.dtype).max)
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InvalidInputError("the capture contains NaN or infinite values")
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 3):
        a = np.moveaxis(a[..., :3] if a.shape[-1] == 4 else a, -1, 0)
    elif a.ndim != 3:
        raise InvalidInputError(f"a capture must be 2-D or 3-D, got shape {a.shape}")
    if a.size and a.max() > 1.0:
        if a.max() <= 255.0:
            a = a / 255.0
        else:
            raise InvalidInputError("pixel values above 255: give 8-bit values or values in 0..1")
    c, h, w = shape
    if a.shape[0] != c:
        if c == 1:
            a = a.mean(axis=0, keepdims=True)
        elif a.shape[0] == 1:
            a = np.repeat(a, c, axis=0)
        else:
            raise InvalidInputError(f"capture has {a.shape[0]} channels, the model wants {c}")
    return np.clip(_resize(a, h, w), 0.0, 1.0)


def default_validity_check(shape: tuple[int, int, int], full_scale: float = 1.0) -> ValidityCheck:
    """Reject wrongly shaped, blank (almost all black or white) and constant captures whose
    values run from 0 to ``full_scale``."""

    def check(x: np.ndarray) -> None:
        if tuple(x.shape) != tuple(shape):
            raise InvalidInputError(f"capture has shape {tuple(x.shape)}, the model expects {tuple(shape)}")
        u = x / full_scale
        if float(u.std()) < 1e-3:
            raise InvalidInputError("the capture is constant (no contrast); capture again")
        busy = np.mean(np.abs(u - np.median(u)) > 0.1)
        if busy < 0.01:
            raise InvalidInputError("the capture is blank (less than 1% of pixels differ from the "
                                    "background); capture again")

    return check


class Terminal:
    """Prepares captures for N nodes; ``check`` is the model owner's validity check.

    ``capture`` names how a capture becomes the model's input (see the module doc): ``unit``
    or ``face``; ``prepare`` replaces it with any function (image, shape) -> input."""

    def __init__(self, shape: tuple[int, int, int], n_parties: int, frac_bits: int = 16,
                 check: ValidityCheck | None = None, capture: str = "unit",
                 prepare: Prepare | None = None) -> None:
        if capture not in CAPTURES:
            raise InvalidInputError(f"unknown capture kind {capture!r}; known: {', '.join(CAPTURES)}")
        self.shape = tuple(shape)
        self.n = n_parties
        self.f = frac_bits
        self.capture = capture
        if prepare is None and capture == "face":
            from mpc.client.faces import FaceCapture  # onnxruntime and YuNet only where faces are used

            prepare = FaceCapture()
        self.prepare = prepare or normalise
        self.check = check or default_validity_check(self.shape, 255.0 if capture == "face" else 1.0)

    def prepare_array(self, img: np.ndarray) -> np.ndarray:
        """The model's (C, H, W) input from a capture, checked."""
        x = self.prepare(img, self.shape)
        self.check(x)
        return x

    def shares(self, img: np.ndarray) -> list[np.ndarray]:
        """One (1, C, H, W) share per node."""
        x = self.prepare_array(img)
        return share(encode(x[None], self.f), self.n)

    def shares_from_file(self, path: str | Path) -> list[np.ndarray]:
        return self.shares(read_image(path))
