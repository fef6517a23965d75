"""ONNX import: validation of files, operators, opsets, dtypes and shapes; normalisation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from enclave.interpreter import MAX_OPSET, MIN_OPSET, SUPPORTED_OPS
from orchestrator.models import load_model
from splitseal import onnx_import
from splitseal.errors import ModelError, UnsupportedOperatorError
from tests.support.models_fixtures import make_model, small_cnn


def _vi(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def strict_load(data: bytes):
    """The shared importer in its strict mode (the MPC owner's use): every node of the model is
    held to the operator set, not only the head's (that is the split's job, see test_models_head)."""
    return onnx_import.load_model(data, operators=SUPPORTED_OPS, opsets=(MIN_OPSET, MAX_OPSET))


def test_small_cnn_imports_with_roles_and_layers():
    imp = load_model(small_cnn().SerializeToString())
    assert imp.opset == 17
    assert [v.name for v in imp.inputs] == ["x"] and imp.inputs[0].shape == (None, 1, 8, 8)
    assert imp.outputs[0].shape == (None, 5)
    assert imp.values["cat"].shape == (None, 6, 4, 4)
    assert [n.name for n in imp.layers()] == ["conv1", "conv2", "conv3", "neck", "head"]
    assert imp.roles["conv1.weight"] == "weight" and imp.roles["conv1.bias"] == "bias"
    assert imp.roles["bn1.mean"] == "statistic" and imp.roles["flat_shape"] == "constant"
    assert imp.source_hash == bytes(__import__("eth_utils").crypto.keccak(small_cnn().SerializeToString()))


def test_load_from_path(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(small_cnn().SerializeToString())
    assert load_model(p).source_bytes == p.read_bytes()
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")


@pytest.mark.parametrize("data", [b"", b"\x00\x01garbage\xff" * 5, b"hello world, not a model"])
def test_corrupt_files_refused(data):
    with pytest.raises(ModelError):
        load_model(data)


def test_truncated_file_refused():
    data = small_cnn().SerializeToString()
    for n in (10, len(data) // 2, len(data) - 3):
        with pytest.raises(ModelError):
            load_model(data[:n])


def test_unsupported_operator_names_node_and_op():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="ok"),
             helper.make_node("LeakyRelu", ["r"], ["y"], name="leaky", alpha=0.1)]
    m = make_model(nodes, [_vi("x", ["N", 3])], [_vi("y", ["N", 3])], [])
    with pytest.raises(UnsupportedOperatorError, match=r"'leaky' \(LeakyRelu\).*LeakyRelu"):
        strict_load(m.SerializeToString())


def test_unsupported_attribute_refused():
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=1),
             ]
    m = make_model(nodes, [_vi("x", ["N", 3])], [_vi("y", ["N", 3])], [])
    m.graph.node[0].attribute.append(helper.make_attribute("bogus", 1))
    with pytest.raises(ModelError, match="bogus"):
        strict_load(m.SerializeToString())


@pytest.mark.parametrize("opset", [9, 10])
def test_old_opset_refused(opset):
    m = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x", ["N", 3])], [_vi("y", ["N", 3])],
                   [], opset=opset)
    with pytest.raises(UnsupportedOperatorError, match="opset"):
        load_model(m.SerializeToString())


def test_dynamic_non_batch_dimension_refused():
    m = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x", ["N", "C"])], [_vi("y", ["N", "C"])], [])
    with pytest.raises(ModelError, match="dimension 1 of tensor 'x' is dynamic"):
        strict_load(m.SerializeToString())


def test_unresolvable_shape_names_node():
    # Flatten at axis 0 of a batch-symbolic input: the output's dimension 1 is N*3, not static
    m = make_model([helper.make_node("Flatten", ["x"], ["y"], name="flat0", axis=0)], [_vi("x", ["N", 3])],
                   [_vi("y", ["A", "B"])], [])
    with pytest.raises(ModelError, match=r"node 'flat0' \(Flatten\)"):
        strict_load(m.SerializeToString())


def test_float64_parameter_refused():
    inits = [numpy_helper.from_array(np.ones((3, 2)), "w")]
    m = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [_vi("x", ["N", 3], TensorProto.DOUBLE)],
                   [_vi("y", ["N", 2], TensorProto.DOUBLE)], inits)
    with pytest.raises(UnsupportedOperatorError, match="float32"):
        strict_load(m.SerializeToString())


def test_computed_reshape_shape_refused():
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")]
    m = make_model(nodes, [_vi("x", [2, 6]), _vi("s", [2], TensorProto.INT64)], [_vi("y", ["A", "B"])], [])
    with pytest.raises(UnsupportedOperatorError, match=r"'rs' \(Reshape\).*must be a constant"):
        strict_load(m.SerializeToString())


def test_non_2d_conv_refused():
    inits = [numpy_helper.from_array(np.ones((2, 3, 3), np.float32), "w")]
    m = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv1d")], [_vi("x", ["N", 3, 9])],
                   [_vi("y", ["N", 2, 7])], inits)
    with pytest.raises(UnsupportedOperatorError, match="conv1d.*2-D"):
        strict_load(m.SerializeToString())


def test_checker_failure_reported():
    m = small_cnn()
    m.graph.node[1].input[0] = "no_such_tensor"
    with pytest.raises(ModelError):
        load_model(m.SerializeToString())


def test_constants_folded_and_nodes_named():
    shape = helper.make_tensor("shape_value", TensorProto.INT64, [2], [0, -1])
    nodes = [helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("Reshape", ["x", "s"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    m = make_model(nodes, [_vi("x", ["N", 2, 3])], [_vi("y", ["N", 6])], [])
    imp = load_model(m.SerializeToString())
    assert [n.op_type for n in imp.nodes] == ["Reshape", "Relu"]
    assert [n.name for n in imp.nodes] == ["Reshape_0", "Relu_1"]
    assert imp.initializers["s"].tolist() == [0, -1]
    assert imp.values["y"].shape == (None, 6)


def test_external_data_refused():
    m = small_cnn()
    t = m.graph.initializer[0]
    t.data_location = onnx.TensorProto.EXTERNAL
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.external_data.add(key="location", value="weights.bin")
    with pytest.raises(ModelError):
        load_model(m.SerializeToString())
