"""The committed reference models: intact, named as documented, and as good as recorded.

These re-measure the quality from the committed ONNX file on the held-out split with
onnxruntime; they fail if a file is replaced without its metrics, or the split changes.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from orchestrator.training import load_split, reference_metrics_path, reference_model_path
from orchestrator.training.export import run_onnxruntime
from orchestrator.training.metrics import accuracy, verification_metrics
from orchestrator.training.models import build, get_spec
from orchestrator.training.pipeline import TARGET_ACCURACY, TARGET_ROC_AUC, keccak256_hex

NAMES = ["digits_classifier", "digits_embedding"]


def committed(name: str) -> tuple[bytes, dict]:
    return reference_model_path(name).read_bytes(), json.loads(reference_metrics_path(name).read_text())


@pytest.mark.parametrize("name", NAMES)
def test_file_matches_its_recorded_hashes_and_passes_the_checker(name: str) -> None:
    data, record = committed(name)
    assert record["model"] == name and record["file"] == f"{name}.onnx"
    assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert keccak256_hex(data) == record["keccak256"]
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert [n.name for n in model.graph.node] == [n["name"] for n in record["onnx"]["nodes"]]


@pytest.mark.parametrize("name", NAMES)
def test_numpy_network_loaded_from_the_file_agrees_with_onnxruntime(name: str) -> None:
    """The file's initializers fit the documented architecture exactly (names and shapes)."""
    data, _ = committed(name)
    model = onnx.load_from_string(data)
    state = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    network = build(get_spec(name), np.random.default_rng(0))
    network.exported.load_state(state)
    assert set(state) == {n for n, _, _ in network.exported.parameters()}
    x = load_split(16, 0)[2][:50]
    np.testing.assert_allclose(network.predict(x), run_onnxruntime(data, x), atol=1e-5, rtol=0)


def test_classifier_reaches_its_recorded_accuracy() -> None:
    data, record = committed("digits_classifier")
    _, _, x_test, y_test = load_split(record["data"]["input_size"], record["data"]["split_seed"])
    assert len(y_test) == record["data"]["test_size"]
    acc = accuracy(run_onnxruntime(data, x_test), y_test)
    # exact on this machine; one near-tie image may flip on a CPU with other float kernels
    assert acc == pytest.approx(record["metrics"]["test_accuracy"], abs=1.01 / len(y_test))
    assert acc >= TARGET_ACCURACY


def test_embedding_reaches_its_recorded_auc_and_eer() -> None:
    data, record = committed("digits_embedding")
    _, _, x_test, y_test = load_split(record["data"]["input_size"], record["data"]["split_seed"])
    vectors = run_onnxruntime(data, x_test)
    assert vectors.shape == (len(y_test), 32)
    m = verification_metrics(vectors, y_test)
    # tolerances allow a few near-equal pairs to swap ranks on a CPU with other float kernels
    assert m.roc_auc == pytest.approx(record["metrics"]["roc_auc"], abs=1e-5)
    assert m.eer == pytest.approx(record["metrics"]["eer"], abs=1e-3)
    assert m.threshold == pytest.approx(record["metrics"]["threshold"], abs=1e-3)
    assert m.roc_auc >= TARGET_ROC_AUC


def test_embedding_graph_stays_within_what_the_mpc_nodes_run() -> None:
    data, _ = committed("digits_embedding")
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert ops <= {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"}
