"""The split on torch-style exports: the backbone runs whatever onnxruntime runs, only the head is
held to the enclave interpreter, refusals name everything to fix, rules by layer name."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from enclave.interpreter import HeadInterpreter
from orchestrator.models import load_model
from orchestrator.models.rule import module_path, parse_rule
from orchestrator.models.split import random_samples, split_model
from splitseal.errors import ProtectionRuleError, UnsupportedOperatorError
from tests.support.models_fixtures import make_model
from tests.support.torch_style import torch_style


def rule(split: str, protect: str = 'layers = ["fc"]') -> object:
    return parse_rule(f'version=1\n[split]\n{split}\n[protect]\n{protect}\n[output]\npolicy="label_scores"\n'.encode())


@pytest.fixture(scope="module")
def imp():
    return load_model(torch_style().SerializeToString())


def test_import_accepts_backbone_operators_and_folds_shape_chains(imp):
    ops = [n.op_type for n in imp.nodes]
    assert "LeakyRelu" in ops                          # the backbone may use anything onnxruntime runs
    assert not {"Shape", "Gather", "Unsqueeze", "Concat", "Identity"} & set(ops)
    reshape = next(n for n in imp.nodes if n.op_type == "Reshape")
    assert imp.initializers[reshape.input[1]].tolist() == [0, -1]   # batch copied, exact for any batch
    assert "onnx::Mul_151" in imp.initializers                      # the Identity's parameter copy


def test_module_paths_of_torch_node_names():
    assert module_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert module_path("/fc/Gemm") == "fc"
    assert module_path("/Reshape") == ""
    assert module_path("neck") == "neck"


def test_split_by_layer_names_protects_torchscript_parameters(imp):
    samples = random_samples(imp, 7, seed=5)
    res = split_model(imp, rule('at_layer = "layer1.*"', 'layers = ["layer1.*", "fc"]\nparameters = ["onnx::Mul_151"]'),
                      samples)
    assert res.crossing == ["/relu/LeakyRelu_output_0"]      # the skip and the conv read the same tensor
    assert res.head_nodes[0] == "/layer1/layer1.0/conv1/Conv"
    assert res.protected == sorted(["onnx::Conv_102", "onnx::Conv_103", "fc.weight", "fc.bias", "onnx::Mul_151"])
    assert "LeakyRelu" in [n.op_type for n in res.backbone_model.graph.node]
    assert res.verification.samples == 7
    assert res.verification.max_abs_diff_interpreter <= 1e-5


def test_split_at_layer_by_node_name_glob_and_star(imp):
    res = split_model(imp, rule('at_layer = "/avgpool/*"', 'parameters = ["*"]'), random_samples(imp, 3))
    assert res.head_nodes == ["/avgpool/ReduceMean", "/Reshape", "/fc/Gemm", "/fc/Mul"]
    assert res.protected == ["fc.bias", "fc.weight", "onnx::Mul_151"]


def test_fixed_batch_of_one_verifies_every_sample():
    imp1 = load_model(torch_style(batch=1).SerializeToString())
    res = split_model(imp1, rule('at_layer = "avgpool"'), random_samples(imp1, 5, seed=1))
    assert res.verification.samples == 5
    head = HeadInterpreter(res.package, res.index)
    assert head.input_specs[0][1] == (1, 4, 8, 8)


def test_every_unsupported_head_operator_is_listed_with_its_nodes():
    imp2 = load_model(torch_style(extra_head_ops=True).SerializeToString())
    with pytest.raises(UnsupportedOperatorError) as err:
        split_model(imp2, rule('at_node = "/relu/LeakyRelu"', 'parameters = ["*"]'))
    msg = str(err.value)
    assert "Celu (2 nodes: /fc/Celu, /fc/Celu_1)" in msg
    assert "HardSigmoid (1 node: /fc/HardSigmoid)" in msg
    assert "LeakyRelu (1 node: /relu/LeakyRelu)" in msg
    assert "Move the cut" in msg and "supports: Abs, Add" in msg


def test_cut_crossed_by_several_tensors_splits_with_the_crossing_tensors_in_order(imp):
    res = split_model(imp, rule('at_node = "/layer1/layer1.0/Add"', 'parameters = ["*"]'))
    assert res.crossing == ['/relu/LeakyRelu_output_0', '/layer1/layer1.0/relu/Relu_output_0']
    assert [t.name for t in res.head_graph.inputs] == res.crossing
    assert [o.name for o in res.backbone_model.graph.output] == res.crossing


def test_crossing_tensors_without_a_shared_batch_dimension_are_refused_naming_them():
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Transpose", ["r"], ["rt"], name="time_major", perm=[1, 0, 2]),
             helper.make_node("Add", ["rt", "b"], ["rb"], name="bias"),
             helper.make_node("Transpose", ["rb"], ["y0"], name="back", perm=[1, 0, 2]),
             helper.make_node("Add", ["y0", "r"], ["y"], name="join")]
    b = numpy_helper.from_array(np.ones((3,), np.float32), "b")
    model = make_model(nodes, [vi("x", [2, 4, 3])], [vi("y", [2, 4, 3])], [b])   # static: rt is [4, 2, 3]
    imp3 = load_model(model.SerializeToString())
    with pytest.raises(ProtectionRuleError, match=r"crossed by 2 tensors that cannot travel.*\['r', 'rt'\].*"
                                                  r"different leading dimensions"):
        split_model(imp3, rule('at_node = "bias"', 'parameters = ["*"]'))


def test_tensor_computed_from_parameters_alone_may_not_cross():
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Transpose", ["w"], ["wt"], name="transpose_w", perm=[1, 0]),
             helper.make_node("MatMul", ["r", "wt"], ["y"], name="fc")]
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    imp3 = load_model(make_model(nodes, [vi("x", ["N", 3])], [vi("y", ["N", 2])], [w]).SerializeToString())
    with pytest.raises(ProtectionRuleError, match=r"\['wt'\].*computed from parameters alone"):
        split_model(imp3, rule('at_node = "fc"', 'parameters = ["*"]'))


def test_layers_pattern_matching_nothing_refused(imp):
    with pytest.raises(ProtectionRuleError, match=r"'layer9\.\*' matches no node name or module path"):
        split_model(imp, rule('at_layer = "fc"', 'layers = ["layer9.*"]'))
