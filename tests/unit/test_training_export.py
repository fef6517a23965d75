"""ONNX export: checker, names, symbolic batch, byte-determinism and equality with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from orchestrator.training.export import EXPORT_TOLERANCE, max_abs_diff_vs_onnxruntime, run_onnxruntime, to_onnx
from orchestrator.training.models import build, get_spec

ALLOWED_OPS = {"Conv", "Relu", "Sigmoid", "Tanh", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
               "BatchNormalization", "Add", "Concat", "Flatten", "Reshape", "Gemm", "MatMul", "Softmax",
               "Identity", "Dropout"}


def trained_like(name: str, seed: int = 11):
    """A network with random, non-zero biases (zeros would hide a mis-wired bias)."""
    network = build(get_spec(name), np.random.default_rng(seed))
    r = np.random.default_rng(seed + 1)
    for _, layer, key in network.exported.parameters():
        if key == "bias":
            layer.params[key] = (r.standard_normal(layer.params[key].shape) * 0.1).astype(np.float32)
    return network


@pytest.mark.parametrize("name", ["digits_classifier", "digits_embedding"])
def test_export_checks_and_matches_onnxruntime(name: str) -> None:
    network = trained_like(name)
    model = to_onnx(network)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    x = np.random.default_rng(2).random((7, 1, 16, 16)).astype(np.float32)
    assert max_abs_diff_vs_onnxruntime(network, data, x) <= EXPORT_TOLERANCE
    # symbolic batch dimension: a single image and a different batch size work too
    assert run_onnxruntime(data, x[:1]).shape == (1, get_spec(name).output_dim)
    assert max_abs_diff_vs_onnxruntime(network, data, x[:3]) <= EXPORT_TOLERANCE


@pytest.mark.parametrize("name", ["digits_classifier", "digits_embedding"])
def test_export_names_and_operator_set(name: str) -> None:
    spec = get_spec(name)
    model = to_onnx(trained_like(name))
    g = model.graph
    assert [i.name for i in g.input] == ["image"]
    assert [o.name for o in g.output] == [spec.output_name]
    assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    names = [n.name for n in g.node]
    assert names[:7] == ["backbone.block1.conv", "backbone.block1.relu", "backbone.block1.pool",
                         "backbone.block2.conv", "backbone.block2.relu", "backbone.block2.pool",
                         "backbone.flatten"]
    assert {"neck.fc", "neck.relu", "head.fc"} <= set(names)
    assert {n.op_type for n in g.node} <= ALLOWED_OPS
    assert {t.name for t in g.initializer} == {
        f"{layer}.{p}" for layer in ("backbone.block1.conv", "backbone.block2.conv", "neck.fc", "head.fc")
        for p in ("weight", "bias")}
    assert "train.cosine" not in " ".join(names)  # training-only head never exported
    assert model.opset_import[0].version == 17


def test_classifier_outputs_are_probabilities() -> None:
    network = trained_like("digits_classifier")
    data = to_onnx(network).SerializeToString()
    p = run_onnxruntime(data, np.random.default_rng(4).random((5, 1, 16, 16)).astype(np.float32))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p >= 0).all()


def test_export_is_byte_deterministic_and_weight_sensitive() -> None:
    a = to_onnx(trained_like("digits_classifier", seed=3)).SerializeToString()
    b = to_onnx(trained_like("digits_classifier", seed=3)).SerializeToString()
    c = to_onnx(trained_like("digits_classifier", seed=4)).SerializeToString()
    assert a == b
    assert a != c
