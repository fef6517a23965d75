"""The capture terminal: normalise an image, check it is a usable capture, split it into shares.

Steps, as the patent's terminal does them:

1. read the capture (``.npy`` array, 8/16-bit ``.png`` without interlacing, or ``.pgm``);
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

import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from mpc.engine.ring import encode, share
from splitseal.errors import InvalidInputError

ValidityCheck = Callable[[np.ndarray], None]
Prepare = Callable[[np.ndarray, tuple[int, int, int]], np.ndarray]
CAPTURES = ("unit", "face")


# --- reading -------------------------------------------------------------------------------

def read_image(path: str | Path) -> np.ndarray:
    """Read a capture as a numeric array (H, W) or (H, W, C) or, for .npy, as stored."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"image {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".png":
            return _read_png(path.read_bytes())
        if suffix in (".pgm", ".pnm"):
            return _read_pgm(path.read_bytes())
    except (ValueError, OSError, zlib.error, struct.error) as exc:
        raise InvalidInputError(f"image {path} is not a readable {suffix[1:]} file ({exc})") from None
    raise InvalidInputError(f"image {path}: unsupported format {suffix!r}; use .npy, .png or .pgm")


def _read_pgm(data: bytes) -> np.ndarray:
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        tokens.append(data[pos:end])
        pos = end
    magic, w, h, maxval = tokens[0], int(tokens[1]), int(tokens[2]), int(tokens[3])
    if magic == b"P5":
        dtype = ">u2" if maxval > 255 else "u1"
        arr = np.frombuffer(data, dtype=dtype, count=w * h, offset=pos + 1).reshape(h, w)
    elif magic == b"P2":
        arr = np.array(data[pos:].split()[: w * h], dtype=np.int64).reshape(h, w)
    else:
        raise ValueError("not a PGM (P2/P5)")
    return arr.astype(np.float64) / maxval


def _read_png(data: bytes) -> np.ndarray:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("bad PNG signature")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    w, h, depth, ctype, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if channels is None or depth not in (8, 16) or interlace:
        raise ValueError("only 8/16-bit gray/RGB(A) non-interlaced PNGs are supported")
    bpp = channels * depth // 8
    raw = zlib.decompress(idat)
    stride = w * bpp
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int64)
        cur = np.zeros(stride, dtype=np.int64)
        for x in range(stride):
            a = cur[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 0:
                p = 0
            elif ftype == 1:
                p = a
            elif ftype == 2:
                p = b
            elif ftype == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    if depth == 16:
        arr = out.view(">u2").reshape(h, w, channels).astype(np.float64) / 65535.0
    else:
        arr = out.reshape(h, w, channels).astype(np.float64) / 255.0
    if channels in (2, 4):
        arr = arr[..., :-1]  # drop alpha
    return arr[..., 0] if arr.shape[-1] == 1 else arr


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
