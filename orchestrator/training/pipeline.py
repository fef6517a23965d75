"""Train a reference model, evaluate it on the held-out split, export and record it.

``train_reference`` is what ``splitseal model train`` runs: it writes ``<name>.onnx`` and
``<name>.metrics.json`` (quality, data split, hyper-parameters, iterations, time, the exact
command that reproduces the file, and its sha256 / keccak256) into the output directory.
The recorded quality is measured on onnxruntime's output of the written file, so anyone can
re-measure it from the file and :func:`orchestrator.training.data.load_split`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from splitseal.errors import ModelError
from splitseal.protocol.crypto import keccak256

from .data import DEFAULT_SEED, TEST_FRACTION, load_split
from .export import EXPORT_TOLERANCE, IR_VERSION, OPSET, max_abs_diff_vs_onnxruntime, run_onnxruntime, to_onnx
from .metrics import accuracy, verification_metrics
from .models import INPUT_NAME, ModelSpec, get_spec
from .train import TrainConfig, train

log = logging.getLogger(__name__)

#: Quality targets a reference model must reach on the held-out split.
TARGET_ACCURACY = 0.97
TARGET_ROC_AUC = 0.98

METRICS_VERSION = 1


def keccak256_hex(data: bytes) -> str:
    """0x-prefixed keccak256, the hash the contracts record for files."""
    return "0x" + keccak256(data).hex()


def evaluate(spec: ModelSpec, outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Quality of a model's test-set ``outputs``: accuracy, or verification metrics."""
    if spec.kind == "classifier":
        return {"test_accuracy": accuracy(outputs, labels),
                "test_errors": int((outputs.argmax(axis=1) != labels).sum())}
    return verification_metrics(outputs, labels).as_dict()


def meets_target(spec: ModelSpec, metrics: dict[str, Any]) -> bool:
    """Whether ``metrics`` reach the target the issue sets for this kind of model."""
    if spec.kind == "classifier":
        return metrics["test_accuracy"] >= TARGET_ACCURACY
    return metrics["roc_auc"] >= TARGET_ROC_AUC


def reproduce_command(name: str, seed: int, split_seed: int, max_iters: int, out: str) -> str:
    """The CLI line that retrains exactly this file."""
    cmd = f"splitseal model train --model {name} --seed {seed} --max-iters {max_iters} --out {out}"
    return cmd + (f" --split-seed {split_seed}" if split_seed != DEFAULT_SEED else "")


def train_reference(name: str, out_dir: str | os.PathLike[str], *, seed: int = DEFAULT_SEED,
                    split_seed: int = DEFAULT_SEED, max_iters: int | None = None,
                    config: TrainConfig | None = None, progress: bool = True,
                    out_label: str | None = None) -> dict[str, Any]:
    """Train, check, export and record reference model ``name``; return its metrics record."""
    import onnx
    import onnxruntime

    spec = get_spec(name)
    config = config or TrainConfig()
    max_iters = spec.max_iters if max_iters is None else int(max_iters)
    x_train, y_train, x_test, y_test = load_split(spec.input_size, split_seed)
    result = train(spec, x_train, y_train, seed=seed, max_iters=max_iters, config=config,
                   progress=progress)
    model = to_onnx(result.network)
    data = model.SerializeToString()
    diff = max_abs_diff_vs_onnxruntime(result.network, data, x_test)
    if not diff <= EXPORT_TOLERANCE:
        raise ModelError(f"{name}: onnxruntime differs from the numpy forward pass by {diff:.3g} "
                         f"(> {EXPORT_TOLERANCE}); the export is wrong, the file was not written")
    test_metrics = evaluate(spec, run_onnxruntime(data, x_test), y_test)
    if spec.kind == "classifier":
        test_metrics["train_accuracy"] = accuracy(run_onnxruntime(data, x_train), y_train)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{name}.onnx"
    record: dict[str, Any] = {
        "metrics_version": METRICS_VERSION,
        "model": name,
        "kind": spec.kind,
        "description": spec.description,
        "file": onnx_path.name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "keccak256": keccak256_hex(data),
        "onnx": {"opset": OPSET, "ir_version": IR_VERSION,
                 "input": {"name": INPUT_NAME, "shape": ["N", 1, spec.input_size, spec.input_size],
                           "dtype": "float32", "range": [0.0, 1.0]},
                 "output": {"name": spec.output_name, "shape": ["N", spec.output_dim], "dtype": "float32"},
                 "nodes": [{"name": n.name, "op": n.op_type, "inputs": list(n.input), "outputs": list(n.output)}
                           for n in model.graph.node],
                 "parameters": {t.name: list(t.dims) for t in model.graph.initializer},
                 "parameter_count": int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))},
        "data": {"dataset": "sklearn.datasets.load_digits (UCI handwritten digits, shipped in the package)",
                 "input_size": spec.input_size, "split_seed": split_seed, "test_fraction": TEST_FRACTION,
                 "stratified": True, "train_size": int(len(y_train)), "test_size": int(len(y_test)),
                 "split_function": f"orchestrator.training.data.load_split({spec.input_size}, {split_seed})"},
        "training": {"seed": seed, "max_iters": max_iters, "iterations": result.iterations,
                     "epochs": result.epochs, "converged": result.converged,
                     "final_epoch_loss": result.epoch_losses[-1], "seconds": round(result.seconds, 2),
                     "config": _jsonable(dataclasses.asdict(config))},
        "metrics": test_metrics,
        "meets_target": meets_target(spec, test_metrics),
        "targets": ({"test_accuracy": TARGET_ACCURACY} if spec.kind == "classifier"
                    else {"roc_auc": TARGET_ROC_AUC}),
        "export_check": {"onnxruntime_max_abs_diff": diff, "tolerance": EXPORT_TOLERANCE,
                         "onnx_checker": "passed (full_check)"},
        "command": reproduce_command(name, seed, split_seed, max_iters, out_label or str(out_dir)),
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }
    if spec.kind == "embedding":
        record["metrics"]["note"] = ("all pairs (i < j) of held-out images, cosine similarity of the "
                                     "embeddings; accept as same class when similarity >= threshold")
    _atomic_write(onnx_path, data)
    _atomic_write(out / f"{name}.metrics.json", (json.dumps(record, indent=2) + "\n").encode())
    log.info("wrote model=%s path=%s sha256=%s meets_target=%s", name, onnx_path,
             record["sha256"], record["meets_target"])
    return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are artefacts meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
