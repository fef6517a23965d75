"""The enclave's numpy head interpreter against onnxruntime: every operator, whole heads, and the
cases where it must refuse (fail closed)."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from enclave.interpreter import HeadInterpreter, apply_output_policy
from enclave.package import HeadGraph, HeadPackage, NodeSpec, TensorSpec, build_parameter_blob, encode_graph
from orchestrator.models import load_model
from orchestrator.models.backbone import ort_session
from orchestrator.models.rule import parse_rule
from orchestrator.models.split import head_to_graph, split_model
from splitseal.errors import ModelError, PackageFormatError, UnsupportedOperatorError
from tests.support.models_fixtures import small_cnn

RNG = np.random.default_rng(1234)


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def package_whole(model: onnx.ModelProto, policy: str = "label_scores"):
    """The whole model as a head package (a dummy parameter if the model has none)."""
    imp = load_model(model.SerializeToString())
    graph, params = head_to_graph(imp, imp.model, [v.name for v in imp.inputs], policy, {})
    if not params:
        params = [("unused", np.zeros(1, np.float32))]
        graph = dataclasses.replace(graph, parameters=(TensorSpec("unused", (1,), "float32"),))
    blob, index = build_parameter_blob(params)
    return HeadPackage(encode_graph(graph), blob), index, graph, params


def single_op(op: str, inputs: dict[str, np.ndarray], params: dict[str, np.ndarray],
              opset: int = 17, n_outputs: int = 1, **attrs) -> onnx.ModelProto:
    """A one-node model; ``inputs`` become graph inputs (batch dim symbolic), ``params`` initializers."""
    names = list(inputs) + list(params)
    static = attrs.pop("_static_batch", False)
    outs = ["y"] + [f"y{i}" for i in range(1, n_outputs)]
    node = helper.make_node(op, names, outs, name=f"the_{op.lower()}", **attrs)
    vin = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [v.shape[0] if static else "N", *v.shape[1:]]) for k, v in inputs.items()]
    vout = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    inits = [numpy_helper.from_array(v, k) for k, v in params.items()]
    graph = helper.make_graph([node], "t", vin, vout, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return model


def compare(model: onnx.ModelProto, feed: dict[str, np.ndarray], atol: float = 1e-5) -> np.ndarray:
    pkg, index, _, _ = package_whole(model)
    head = HeadInterpreter(pkg, index)
    ours = head.run(feed)
    sess = ort_session(model.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    theirs = dict(zip(names, sess.run(names, feed)))
    for n in names:
        assert ours[n].dtype == np.float32
        assert ours[n].shape == theirs[n].shape
        np.testing.assert_allclose(ours[n], theirs[n], atol=atol, rtol=1e-5)
    return ours[names[0]]


X4 = _f(2, 4, 7, 9)

CASES = [
    # (id, op, inputs, params, attrs, opset)
    ("conv_basic", "Conv", {"x": X4}, {"w": _f(6, 4, 3, 3), "b": _f(6)}, {}, 17),
    ("conv_pads_strides", "Conv", {"x": X4}, {"w": _f(5, 4, 3, 2), "b": _f(5)},
     {"pads": [1, 0, 2, 1], "strides": [2, 3]}, 17),
    ("conv_dilations_nobias", "Conv", {"x": X4}, {"w": _f(3, 4, 2, 3)}, {"dilations": [2, 2], "pads": [1, 1, 1, 1]}, 17),
    ("conv_group2", "Conv", {"x": X4}, {"w": _f(6, 2, 3, 3), "b": _f(6)}, {"group": 2, "pads": [1, 1, 1, 1]}, 17),
    ("conv_depthwise", "Conv", {"x": X4}, {"w": _f(4, 1, 3, 3)}, {"group": 4}, 17),
    ("conv_same_upper", "Conv", {"x": X4}, {"w": _f(2, 4, 4, 4)}, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 17),
    ("conv_same_lower", "Conv", {"x": X4}, {"w": _f(2, 4, 4, 3)}, {"auto_pad": "SAME_LOWER"}, 17),
    ("conv_valid", "Conv", {"x": X4}, {"w": _f(2, 4, 3, 3)}, {"auto_pad": "VALID", "kernel_shape": [3, 3]}, 17),
    ("relu", "Relu", {"x": X4}, {}, {}, 17),
    ("sigmoid", "Sigmoid", {"x": X4 * 30}, {}, {}, 17),
    ("tanh", "Tanh", {"x": X4 * 3}, {}, {}, 17),
    ("clip_both", "Clip", {"x": X4}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}, {}, 13),
    ("clip_min_only", "Clip", {"x": X4}, {"lo": np.array(0.0, np.float32)}, {}, 13),
    ("clip_none", "Clip", {"x": X4}, {}, {}, 13),
    ("maxpool", "MaxPool", {"x": X4}, {}, {"kernel_shape": [2, 2], "strides": [2, 2]}, 17),
    ("maxpool_pads_ceil", "MaxPool", {"x": X4}, {}, {"kernel_shape": [3, 3], "strides": [2, 2],
                                                     "pads": [1, 1, 1, 1], "ceil_mode": 1}, 17),
    ("maxpool_dilation", "MaxPool", {"x": X4}, {}, {"kernel_shape": [2, 2], "dilations": [2, 2]}, 17),
    ("maxpool_same", "MaxPool", {"x": X4}, {}, {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, 17),
    ("avgpool", "AveragePool", {"x": X4}, {}, {"kernel_shape": [2, 2], "strides": [2, 2]}, 17),
    ("avgpool_pads_excl", "AveragePool", {"x": X4}, {}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 17),
    ("avgpool_pads_incl", "AveragePool", {"x": X4}, {}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                                        "count_include_pad": 1}, 17),
    ("avgpool_ceil", "AveragePool", {"x": X4}, {}, {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, 17),
    ("avgpool_ceil_incl", "AveragePool", {"x": X4}, {}, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1,
                                                        "pads": [1, 1, 1, 1], "count_include_pad": 1}, 17),
    ("avgpool_same_lower", "AveragePool", {"x": X4}, {}, {"kernel_shape": [3, 2], "auto_pad": "SAME_LOWER"}, 17),
    ("global_avgpool", "GlobalAveragePool", {"x": X4}, {}, {}, 17),
    ("batchnorm", "BatchNormalization", {"x": X4},
     {"s": _f(4), "b": _f(4), "m": _f(4), "v": (RNG.random(4) + 0.1).astype(np.float32)}, {"epsilon": 1e-3}, 15),
    ("add_bias_broadcast", "Add", {"x": X4}, {"b": _f(4, 1, 1)}, {}, 17),
    ("add_two_inputs", "Add", {"x": X4, "z": _f(2, 4, 7, 9)}, {}, {}, 17),
    ("concat_axis1", "Concat", {"x": X4, "z": _f(2, 3, 7, 9)}, {}, {"axis": 1}, 17),
    ("concat_neg_axis", "Concat", {"x": X4, "z": _f(2, 4, 7, 2)}, {}, {"axis": -1}, 17),
    ("flatten_1", "Flatten", {"x": X4}, {}, {}, 17),
    ("flatten_2", "Flatten", {"x": X4}, {}, {"axis": 2}, 17),
    ("flatten_0", "Flatten", {"x": X4}, {}, {"axis": 0, "_static_batch": True}, 17),
    ("flatten_neg", "Flatten", {"x": X4}, {}, {"axis": -1}, 17),
    ("reshape_zero_minus1", "Reshape", {"x": X4}, {"s": np.array([0, -1, 9], np.int64)}, {}, 17),
    ("reshape_allowzero0", "Reshape", {"x": X4}, {"s": np.array([0, 4, 63], np.int64)}, {"allowzero": 0}, 17),
    ("gemm", "Gemm", {"a": _f(3, 8)}, {"w": _f(8, 5), "c": _f(5)}, {}, 17),
    ("gemm_transb_alpha_beta", "Gemm", {"a": _f(3, 8)}, {"w": _f(5, 8), "c": _f(1, 5)},
     {"transB": 1, "alpha": 0.5, "beta": 2.0}, 17),
    ("gemm_transa_noc", "Gemm", {"a": _f(3, 8)}, {"w": _f(3, 4)}, {"transA": 1}, 17),
    ("matmul_2d", "MatMul", {"a": _f(3, 8)}, {"w": _f(8, 6)}, {}, 17),
    ("matmul_batched", "MatMul", {"a": _f(2, 3, 8)}, {"w": _f(8, 6)}, {}, 17),
    ("matmul_vector", "MatMul", {"a": _f(3, 8)}, {"w": _f(8)}, {}, 17),
    ("softmax_13", "Softmax", {"x": _f(3, 10) * 5}, {}, {}, 13),
    ("softmax_axis1_4d", "Softmax", {"x": X4}, {}, {"axis": 1}, 13),
    ("softmax_11_coerce", "Softmax", {"x": X4}, {}, {"axis": 1}, 11),
    ("softmax_11_default", "Softmax", {"x": _f(3, 10)}, {}, {}, 11),
    ("identity", "Identity", {"x": X4}, {}, {}, 17),
    ("dropout_ratio", "Dropout", {"x": X4}, {"r": np.array(0.3, np.float32)}, {}, 17),
    ("dropout_plain", "Dropout", {"x": X4}, {}, {}, 17),
    ("dropout_opset11", "Dropout", {"x": X4}, {}, {"ratio": 0.25}, 11),
    ("avgpool_dilations_19", "AveragePool", {"x": X4}, {}, {"kernel_shape": [2, 2], "dilations": [2, 1]}, 19),
    # a mean or sum over trailing axes of few elements (a 2x2 map) is one matrix-vector product
    ("reducemean_short_trailing", "ReduceMean", {"x": _f(2, 40, 2, 2) * 3}, {"a": np.array([-1, -2], np.int64)},
     {"keepdims": 1}, 18),
    ("reducesum_short_trailing", "ReduceSum", {"x": _f(2, 5, 3, 4)}, {"a": np.array([-1], np.int64)},
     {"keepdims": 0}, 13),
    ("global_avgpool_2x2", "GlobalAveragePool", {"x": _f(2, 40, 2, 2) * 3}, {}, {}, 17),
    ("reducemean_long_trailing", "ReduceMean", {"x": _f(2, 3, 50)}, {}, {"axes": [-1], "keepdims": 0}, 13),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_operator_matches_onnxruntime(case):
    _, op, inputs, params, attrs, opset = case
    model = single_op(op, inputs, params, opset=opset, **attrs)
    compare(model, inputs)


def test_every_supported_operator_is_covered():
    from enclave.interpreter import SUPPORTED_OPS
    from tests.unit.test_interpreter_ops import NEW_OPS
    from tests.unit.test_interpreter_rnn import RNN_OPS
    from tests.unit.test_interpreter_trees import TREE_OPS
    assert {c[1] for c in CASES} | set(NEW_OPS) | set(RNN_OPS) | set(TREE_OPS) == set(SUPPORTED_OPS)


def test_symbolic_batch_accepts_other_batch_sizes():
    model = single_op("Conv", {"x": X4}, {"w": _f(3, 4, 3, 3)})
    for n in (1, 5):
        compare(model, {"x": _f(n, 4, 7, 9)})


# --- whole heads ------------------------------------------------------------------------

RULES = {
    "at_tensor": 'version=1\n[split]\nat_tensor="flat"\n[protect]\nparameters=["neck.*","head.*"]\n[output]\npolicy="label_scores"\n',
    "skip_crossing": 'version=1\n[split]\nat_node="skip_add"\n[protect]\nparameters=["conv3.weight","head.*"]\n[output]\npolicy="label"\n',
    "deep_last4": 'version=1\n[split]\nprotect_last_layers=4\n[protect]\nparameters=["conv2.*","conv3.*","neck.*","head.*"]\nkinds=["weights"]\n[output]\npolicy="label"\n',
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_whole_head_matches_onnxruntime(rule):
    imp = load_model(small_cnn().SerializeToString())
    res = split_model(imp, parse_rule(RULES[rule].encode()))
    head_ort = ort_session(res.head_model.SerializeToString())
    head_np = HeadInterpreter(res.package, res.index)
    assert [s[0] for s in head_np.input_specs] == res.crossing
    feed = {t: _f(7, *imp.values[t].shape[1:]) for t in res.crossing}
    want = head_ort.run(["probs"], feed)[0]
    got = head_np.run(feed)["probs"]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert head_np.output_names == ["probs"]


def test_output_policy():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], np.float32)
    assert apply_output_policy("label", scores)["label"].tolist() == [1, 0]
    both = apply_output_policy("label_scores", scores)
    assert both["label"].tolist() == [1, 0] and np.array_equal(both["scores"], scores)
    assert set(apply_output_policy("features", scores)) == {"features"}
    with pytest.raises(ModelError):
        apply_output_policy("everything", scores)


# --- fail closed ------------------------------------------------------------------------

def _graph_variant(graph: HeadGraph, params, **changes) -> tuple[HeadPackage, object]:
    g = dataclasses.replace(graph, **changes)
    blob, index = build_parameter_blob(params)
    return HeadPackage(encode_graph(g), blob), index


def _conv_graph():
    model = single_op("Conv", {"x": X4}, {"w": _f(3, 4, 3, 3)})
    pkg, index, graph, params = package_whole(model)
    return graph, params


def _with_node(graph: HeadGraph, **node_changes) -> tuple[NodeSpec, ...]:
    return (dataclasses.replace(graph.nodes[0], **node_changes),)


def test_unknown_operator_refused():
    graph, params = _conv_graph()
    pkg, index = _graph_variant(graph, params, nodes=_with_node(graph, op="Erf"))
    with pytest.raises(UnsupportedOperatorError, match="the_conv.*Erf"):
        HeadInterpreter(pkg, index)


def test_unknown_attribute_refused():
    graph, params = _conv_graph()
    attrs = dict(graph.nodes[0].attrs, fancy=1)
    pkg, index = _graph_variant(graph, params, nodes=_with_node(graph, attrs=attrs))
    with pytest.raises(UnsupportedOperatorError, match="fancy"):
        HeadInterpreter(pkg, index)


@pytest.mark.parametrize("attrs", [{"auto_pad": "SAME_WEIRD"}, {"strides": [1, 1, 1]}, {"group": 3},
                                   {"pads": [1, 1]}, {"strides": "2"}])
def test_unsupported_attribute_values_refused(attrs):
    graph, params = _conv_graph()
    pkg, index = _graph_variant(graph, params, nodes=_with_node(graph, attrs=attrs))
    head = HeadInterpreter(pkg, index)
    with pytest.raises(ModelError):  # UnsupportedOperatorError is a ModelError
        head.run({"x": X4})


@pytest.mark.parametrize("opset", [10, 24])
def test_unknown_opset_refused(opset):
    graph, params = _conv_graph()
    pkg, index = _graph_variant(graph, params, opset=opset)
    with pytest.raises(UnsupportedOperatorError, match="opset"):
        HeadInterpreter(pkg, index)


@pytest.mark.parametrize("op, attrs, opset", [("AveragePool", {"kernel_shape": [2, 2], "dilations": [1, 1]}, 17),
                                               ("Reshape", {"allowzero": 0}, 13),
                                               ("Dropout", {"ratio": 0.5}, 13),
                                               ("Dropout", {"seed": 1}, 11)])
def test_attribute_outside_its_opset_refused(op, attrs, opset):
    graph, params = _conv_graph()
    pkg, index = _graph_variant(graph, params, opset=opset, nodes=_with_node(graph, op=op, attrs=attrs))
    with pytest.raises(UnsupportedOperatorError, match="does not exist in opset"):
        HeadInterpreter(pkg, index)


def test_input_dtype_shape_and_name_mismatch_refused():
    graph, params = _conv_graph()
    pkg, index = _graph_variant(graph, params)
    head = HeadInterpreter(pkg, index)
    with pytest.raises(ModelError, match="float32"):
        head.run({"x": X4.astype(np.float64)})
    with pytest.raises(ModelError, match="shape"):
        head.run({"x": X4[:, :3]})
    with pytest.raises(ModelError, match="exactly"):
        head.run({"z": X4})
    with pytest.raises(ModelError, match="float32"):
        head.run({"x": X4.tolist()})
    with pytest.raises(ModelError, match="NaN"):
        head.run({"x": np.where(X4 > 1, np.nan, X4).astype(np.float32)})


def test_declared_intermediate_shape_mismatch_refused():
    graph, params = _conv_graph()
    values = dict(graph.values)
    values["y"] = TensorSpec("y", (None, 3, 5, 8), "float32")  # true shape is (N, 3, 5, 7)
    pkg, index = _graph_variant(graph, params, values=values)
    with pytest.raises(ModelError, match="declares"):
        HeadInterpreter(pkg, index).run({"x": X4})


def test_weight_shape_mismatch_refused():
    graph, params = _conv_graph()
    bad = [("w", _f(3, 5, 3, 3))]  # 5 input channels, the input has 4
    g = dataclasses.replace(graph, parameters=(TensorSpec("w", (3, 5, 3, 3), "float32"),))
    pkg, index = _graph_variant(g, bad)
    with pytest.raises(ModelError, match="channels"):
        HeadInterpreter(pkg, index).run({"x": X4})


def test_oversized_tensor_refused():
    graph, params = _conv_graph()
    pkg, index = _graph_variant(graph, params)
    head = HeadInterpreter(pkg, index, max_tensor_elements=500)
    with pytest.raises(ModelError, match="limit"):
        head.run({"x": X4})
    small = HeadInterpreter(pkg, index, max_tensor_elements=X4.size)  # input fits, window buffer does not
    with pytest.raises(ModelError, match="window buffer"):
        small.run({"x": X4})


def test_tampered_parameter_refused():
    graph, params = _conv_graph()
    pkg, index = _graph_variant(graph, params)
    blob = bytearray(pkg.params_bytes)
    blob[17] ^= 0x01
    with pytest.raises(PackageFormatError, match="sha256"):
        HeadInterpreter(HeadPackage(pkg.graph_bytes, bytes(blob)), index)


def test_index_of_another_package_refused():
    graph, params = _conv_graph()
    pkg, _ = _graph_variant(graph, params)
    _, other_index = build_parameter_blob([("w2", _f(3, 4, 3, 3))])
    with pytest.raises(PackageFormatError, match="does not match"):
        HeadInterpreter(pkg, other_index)
    _, short_index = build_parameter_blob([("w", _f(3, 4, 3, 2))])
    with pytest.raises(PackageFormatError):
        HeadInterpreter(pkg, short_index)


def test_blob_longer_than_index_refused():
    graph, params = _conv_graph()
    pkg, index = _graph_variant(graph, params)
    with pytest.raises(PackageFormatError, match="covers"):
        HeadInterpreter(HeadPackage(pkg.graph_bytes, pkg.params_bytes + b"\0\0\0\0"), index)


def test_undefined_tensor_and_bad_arity_refused():
    graph, params = _conv_graph()
    pkg, index = _graph_variant(graph, params, nodes=_with_node(graph, inputs=("nowhere", "w")))
    with pytest.raises(ModelError, match="not defined"):
        HeadInterpreter(pkg, index)
    pkg, index = _graph_variant(graph, params, nodes=_with_node(graph, inputs=("x",)))
    with pytest.raises(UnsupportedOperatorError, match="inputs"):
        HeadInterpreter(pkg, index)


def test_training_modes_refused():
    x = {"x": X4}
    bn = single_op("BatchNormalization", x, {"s": _f(4), "b": _f(4), "m": _f(4), "v": np.ones(4, np.float32)}, opset=15)
    pkg, index, graph, params = package_whole(bn)
    node = dataclasses.replace(graph.nodes[0], attrs={"training_mode": 1})
    pkg, index = _graph_variant(graph, params, nodes=(node,))
    with pytest.raises(UnsupportedOperatorError, match="training_mode"):
        HeadInterpreter(pkg, index).run(x)
    graph = HeadGraph(17, "label", (TensorSpec("x", (None, 4, 7, 9), "float32"),),
                      (TensorSpec("y", (None, 4, 7, 9), "float32"),), (TensorSpec("r", (), "float32"),),
                      {}, (NodeSpec("d", "Dropout", ("x", "r", "r"), ("y",), {}),), {})
    pkg, index = _graph_variant(graph, [("r", np.array(1.0, np.float32))])
    with pytest.raises(UnsupportedOperatorError, match="training_mode"):
        HeadInterpreter(pkg, index).run(x)


def test_one_dimensional_conv_refused():
    x = _f(2, 4, 9)
    graph = HeadGraph(17, "label", (TensorSpec("x", (None, 4, 9), "float32"),),
                      (TensorSpec("y", (None, 3, 7), "float32"),), (TensorSpec("w", (3, 4, 3), "float32"),),
                      {}, (NodeSpec("c", "Conv", ("x", "w"), ("y",), {}),), {})
    pkg, index = _graph_variant(graph, [("w", _f(3, 4, 3))])
    with pytest.raises(UnsupportedOperatorError, match="2-D"):
        HeadInterpreter(pkg, index).run({"x": x})


def test_parameters_are_read_through_the_index():
    """Every parameter the interpreter uses is exactly the blob slice the index names."""
    imp = load_model(small_cnn().SerializeToString())
    res = split_model(imp, parse_rule(RULES["deep_last4"].encode()))
    for e in res.index.entries:
        raw = res.package.params_bytes[e.offset:e.offset + e.length]
        assert hashlib.sha256(raw).digest() == e.sha256
        assert np.array_equal(np.frombuffer(raw, e.dtype).reshape(e.shape), imp.initializers[e.name])
    head = HeadInterpreter(res.package, res.index)
    assert head.merkle_root == res.index.merkle_root()
    assert head.output_policy == "label"


def test_per_shape_memos_follow_the_batch_size():
    """The interpreter keeps what a node derives from its input shapes (a Reshape's target, a
    Gather's indices, LayerNorm's axes, a broadcast's check) per shape: one interpreter fed
    batch sizes in turn, more of them than a node keeps, matches onnxruntime on every one."""
    from enclave.interpreter import _MEMO_LIMIT

    def c64(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),                       # [N, 6] -> [N, 2, 3]
        helper.make_node("LayerNormalization", ["r", "scale", "bias"], ["ln"], axis=-1, epsilon=1e-5),
        helper.make_node("Unsqueeze", ["ln", "ax1"], ["u"]),                       # [N, 1, 2, 3]
        helper.make_node("Squeeze", ["u", "ax1"], ["sq"]),                         # [N, 2, 3]
        helper.make_node("Gather", ["sq", "idx"], ["g"], axis=1),                  # [N, 3]
        helper.make_node("Mul", ["g", "k"], ["m"]),
        helper.make_node("Gemm", ["m", "w", "c"], ["gm"], transB=1),               # [N, 4]
        helper.make_node("Add", ["gm", "c2"], ["a"]),
        helper.make_node("Softmax", ["a"], ["y"], axis=-1),
    ]
    inits = [c64("shape", [0, 2, 3]), c64("ax1", [1]), c64("idx", -1),
             numpy_helper.from_array(_f(3), "scale"), numpy_helper.from_array(_f(3), "bias"),
             numpy_helper.from_array(_f(1, 3), "k"), numpy_helper.from_array(_f(4, 3), "w"),
             numpy_helper.from_array(_f(4), "c"), numpy_helper.from_array(_f(4), "c2")]
    graph = helper.make_graph(nodes, "memo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    pkg, index, _, _ = package_whole(model)
    head = HeadInterpreter(pkg, index)
    sess = ort_session(model.SerializeToString())
    for batch in [1, 3, 1, 5] + list(range(1, _MEMO_LIMIT + 6)) + [3]:
        x = _f(batch, 6)
        np.testing.assert_allclose(head.run({"x": x})["y"], sess.run(["y"], {"x": x})[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ModelError, match="shape"):
        head.run({"x": _f(2, 7)})


def test_every_call_checks_every_inputs_dtype_and_values_whatever_its_layout():
    """Shapes are checked once per set of shapes; dtype and NaN / infinity on every call, also of
    an input that is a non-contiguous view (the finite check reads a contiguous copy of it)."""
    graph, params = _conv_graph()
    pkg, index = _graph_variant(graph, params)
    head = HeadInterpreter(pkg, index)
    base = np.ascontiguousarray(X4.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)   # X4's values, not C-contiguous
    assert not base.flags.c_contiguous
    np.testing.assert_array_equal(head.run({"x": base})["y"], head.run({"x": X4})["y"])
    for bad in (np.nan, np.inf, -np.inf):
        view = base.copy(order="F")
        view[1, 3, 6, 8] = bad
        with pytest.raises(ModelError, match="NaN or infinity"):
            head.run({"x": view})
        with pytest.raises(ModelError, match="float32"):
            head.run({"x": view.astype(np.float64)})
    np.testing.assert_array_equal(head.run({"x": base})["y"], head.run({"x": X4})["y"])


def test_floating_point_errors_inside_a_head_are_ignored_without_touching_the_callers_state():
    """The steps run under numpy's "ignore" error state (IEEE results, no warnings, even where
    warnings are errors); the caller's own error state is what it was, during and after."""
    x = np.full((2, 3), 3e38, np.float32)
    model = single_op("Mul", {"x": x}, {"k": np.full((1, 3), 10.0, np.float32)})
    pkg, index, _, _ = package_whole(model)
    head = HeadInterpreter(pkg, index)
    before = np.geterr()
    with np.errstate(all="raise"):
        y = head.run({"x": x})["y"]                      # overflows to inf inside the head
        assert np.geterr()["over"] == "raise"
        with pytest.raises(FloatingPointError):
            np.multiply(x, np.float32(10))
    assert np.isposinf(y).all()
    assert np.geterr() == before
