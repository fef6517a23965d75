"""The importer folds the shape computations PaddlePaddle exports write (PP-OCRv4's neck):
Shape -> Cast(int32) -> Slice -> Concat with int32 Constants -> Cast(int64) -> Reshape, block
after block, so every tensor after them gets a shape and a rule can cut there."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from orchestrator.models import load_model


def _paddle_style(blocks: int) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 2, 3])
    nodes, current = [], "x"
    for b in range(blocks):
        p = f"b{b}_"
        nodes += [
            helper.make_node("Relu", [current], [p + "act"]),
            helper.make_node("Shape", [p + "act"], [p + "shape"]),
            helper.make_node("Cast", [p + "shape"], [p + "shape32"], to=TensorProto.INT32),
            helper.make_node("Constant", [], [p + "start"], value=helper.make_tensor(p + "s", TensorProto.INT64, [1], [0])),
            helper.make_node("Constant", [], [p + "end"], value=helper.make_tensor(p + "e", TensorProto.INT64, [1], [2])),
            helper.make_node("Slice", [p + "shape32", p + "start", p + "end"], [p + "head"]),
            helper.make_node("Constant", [], [p + "minus1"],
                             value=helper.make_tensor(p + "m", TensorProto.INT32, [1], [-1])),
            helper.make_node("Concat", [p + "head", p + "minus1"], [p + "target32"], axis=0),
            helper.make_node("Cast", [p + "target32"], [p + "target"], to=TensorProto.INT64),
            helper.make_node("Reshape", [p + "act", p + "target"], [p + "flat"]),
            helper.make_node("Unsqueeze", [p + "flat", "axes3"], [p + "out"]),
        ]
        current = p + "out"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    axes = helper.make_tensor("axes3", TensorProto.INT64, [1], [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "A", "B", "C"])
    graph = helper.make_graph(nodes, "paddle", [x], [y], initializer=[axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()


def test_paddle_shape_chains_fold_block_after_block():
    data = _paddle_style(blocks=3)
    imported = load_model(data)
    # the first reshape flattens (N, 4, 2, 3) to (N, 4, 6) ; the next ones keep it
    for b in range(3):
        assert imported.values[f"b{b}_flat"].shape == (None, 4, 6)
    assert imported.outputs[0].shape == (None, 4, 6, 1)
    assert not any(n.op_type in ("Shape", "Slice", "Cast", "Concat") for n in imported.model.graph.node)
    # folding changes no number: the folded model computes what the exported one does
    x = np.random.default_rng(7).standard_normal((2, 4, 2, 3)).astype(np.float32)
    run = lambda blob: ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_array_equal(run(imported.model.SerializeToString()), run(data))
