"""Small ONNX models built with onnx.helper for the model / package / interpreter tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def make_model(nodes, inputs, outputs, inits, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def small_cnn(seed: int = 0, batch: int | str = "N", opset: int = OPSET) -> onnx.ModelProto:
    """conv-bn-relu-maxpool, a residual block (Add skip), a Concat branch, GAP/flatten, a neck
    Gemm, a head Gemm and Softmax. Input (N, 1, 8, 8), output (N, 5)."""
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.standard_normal(s) * 0.4).astype(np.float32)  # noqa: E731
    inits = [
        _init("conv1.weight", f(4, 1, 3, 3)), _init("conv1.bias", f(4)),
        _init("bn1.scale", (1 + 0.1 * f(4)).astype(np.float32)), _init("bn1.bias", f(4)),
        _init("bn1.mean", f(4)), _init("bn1.var", (0.5 + rng.random(4)).astype(np.float32)),
        _init("conv2.weight", f(4, 4, 3, 3)), _init("conv2.bias", f(4)),
        _init("conv3.weight", f(2, 4, 1, 1)),
        _init("neck.weight", f(6 * 4 * 4, 12)), _init("neck.bias", f(12)),
        _init("head.weight", f(5, 12)), _init("head.bias", f(5)),
        _init("flat_shape", np.array([0, -1], dtype=np.int64)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], ["b1"],
                         name="bn1", epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Add", ["r2", "p1"], ["res"], name="skip_add"),
        helper.make_node("Conv", ["res", "conv3.weight"], ["c3"], name="conv3"),
        helper.make_node("Sigmoid", ["c3"], ["s3"], name="sig3"),
        helper.make_node("Concat", ["res", "s3"], ["cat"], name="concat", axis=1),
        helper.make_node("Reshape", ["cat", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "neck.weight", "neck.bias"], ["n1"], name="neck"),
        helper.make_node("Tanh", ["n1"], ["n2"], name="neck_act"),
        helper.make_node("Gemm", ["n2", "head.weight", "head.bias"], ["logits"], name="head", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 8, 8])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 5])
    return make_model(nodes, [x], [y], inits, opset)


def reference_like(kind: str = "classifier", seed: int = 0, opset: int = OPSET) -> onnx.ModelProto:
    """Random-weight stand-in with the node, tensor and parameter names of the reference models
    (orchestrator/training/models.py): image [N,1,16,16] -> two conv/relu/pool blocks -> flatten
    -> neck.fc/neck.relu -> head.fc (-> head.softmax for the classifier)."""
    rng = np.random.default_rng(seed)
    # He-normal weights as the trainer initialises them, small biases
    f = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / max(int(np.prod(s[1:])), 1))).astype(np.float32)  # noqa: E731
    inits, nodes = [], []
    prev = "image"

    def layer(op, name, params=(), out=None, **attrs):
        nonlocal prev
        out = out or f"{name}.out"
        for pname, arr in params:
            inits.append(_init(f"{name}.{pname}", arr))
        nodes.append(helper.make_node(op, [prev] + [f"{name}.{p}" for p, _ in params], [out], name=name, **attrs))
        prev = out

    for b, (cin, cout) in enumerate(((1, 8), (8, 16)), start=1):
        layer("Conv", f"backbone.block{b}.conv", [("weight", f(cout, cin, 3, 3)), ("bias", f(cout))],
              kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1)
        layer("Relu", f"backbone.block{b}.relu")
        layer("MaxPool", f"backbone.block{b}.pool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0])
    layer("Flatten", "backbone.flatten", axis=1)
    layer("Gemm", "neck.fc", [("weight", f(64, 256)), ("bias", f(64))], transB=1)
    layer("Relu", "neck.relu")
    if kind == "classifier":
        layer("Gemm", "head.fc", [("weight", f(10, 64)), ("bias", f(10))], transB=1)
        layer("Softmax", "head.softmax", out="probabilities", axis=1)
        out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])
    else:
        layer("Gemm", "head.fc", [("weight", f(32, 64)), ("bias", f(32))], out="embedding", transB=1)
        out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 32])
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 16, 16])
    return make_model(nodes, [x], [out], inits, opset)
