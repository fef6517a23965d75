"""The reference tree model: gradient-boosted trees on the breast cancer data that scikit-learn
ships inside its package (``sklearn.datasets.load_breast_cancer``: 569 samples, 30 features,
two classes; nothing is downloaded).

A scikit-learn pipeline ``StandardScaler -> GradientBoostingClassifier``, converted by skl2onnx
(pinned) into ``Scaler`` and ``TreeEnsembleClassifier`` (ai.onnx.ml). What the split serves:
the conversion runs with ``zipmap=False`` (class probabilities as a float32 tensor, not a
sequence of maps), and the exported file keeps only the ``probabilities`` output, dropping the
int64 ``label`` output (the enclave's output policy computes the label as the arg-max of the
probabilities, which is the label for class labels 0 and 1). The rule
``rules/breast_cancer_gbt.toml`` puts the scaler in the public backbone and the trees, with
their thresholds, leaf weights and base value, in the enclave.

Retrain and export: ``python -m orchestrator.training.trees --out models``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx

#: Seed of the held-out split and of the boosting.
SEED = 0
TEST_FRACTION = 0.25
MODEL_FILE = "breast_cancer_gbt.onnx"
#: Hyper-parameters of the reference model.
PARAMS = {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.2, "random_state": SEED}


def load_split(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train, x_test, y_test: float32 features, int64 labels, stratified."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x.astype(np.float32), y.astype(np.int64), test_size=TEST_FRACTION,
                                              random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def train(seed: int = SEED):
    """The fitted scikit-learn pipeline."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x_tr, y_tr, _, _ = load_split(seed)
    return Pipeline([("scaler", StandardScaler()),
                     ("trees", GradientBoostingClassifier(**{**PARAMS, "random_state": seed}))]).fit(x_tr, y_tr)


def export(pipeline) -> onnx.ModelProto:
    """skl2onnx conversion (zipmap off), probabilities as the only output, checked."""
    from skl2onnx import to_onnx

    model = to_onnx(pipeline, np.zeros((1, 30), np.float32), options={id(pipeline.steps[-1][1]): {"zipmap": False}})
    keep = [o for o in model.graph.output if o.name == "probabilities"]
    if len(keep) != 1:
        raise RuntimeError(f"skl2onnx wrote outputs {[o.name for o in model.graph.output]}, expected probabilities")
    del model.graph.output[:]
    model.graph.output.extend(keep)
    # onnx's shape inference knows no shapes for Scaler and TreeEnsembleClassifier: record them
    # (batch dimension symbolic), so that the split can type the cut and the head's tensors
    n_classes = len(pipeline.classes_)
    known = {v.name for v in list(model.graph.value_info) + list(model.graph.output)}
    shapes = {}
    for node in model.graph.node:
        if node.op_type == "Scaler":
            shapes[node.output[0]] = (onnx.TensorProto.FLOAT, ["N", 30])
        elif node.op_type == "TreeEnsembleClassifier":
            shapes[node.output[0]] = (onnx.TensorProto.INT64, ["N"])
            shapes[node.output[1]] = (onnx.TensorProto.FLOAT, ["N", n_classes])
    kept = [v for v in model.graph.value_info if v.name not in shapes]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept + [onnx.helper.make_tensor_value_info(name, dtype, dims)
                                          for name, (dtype, dims) in shapes.items() if name not in known])
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    model.producer_name, model.producer_version = "splitseal.training.trees", "1"
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="models")
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args(argv)
    pipeline = train(args.seed)
    _, _, x_te, y_te = load_split(args.seed)
    out = Path(args.out) / MODEL_FILE
    out.write_bytes(export(pipeline).SerializeToString())
    print(f"{out}: test accuracy {float((pipeline.predict(x_te) == y_te).mean()):.4f} on {len(y_te)} samples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
