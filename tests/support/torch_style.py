"""A model shaped like torch's ONNX exports, built with onnx.helper (torch is not installed):
scoped node names (``/layer1/layer1.0/conv1/Conv``), TorchScript's folded parameter names
(``onnx::Conv_100``), adaptive pooling as ReduceMean, flatten as a Shape -> Gather ->
Unsqueeze -> Concat -> Reshape chain, an Identity the exporter writes over a shared initializer,
and a backbone operator the enclave does not implement (LeakyRelu)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def torch_style(batch: int | str = "batch", seed: int = 0, extra_head_ops: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.standard_normal(s) * 0.4).astype(np.float32)  # noqa: E731
    init = numpy_helper.from_array
    inits = [init(f(4, 3, 3, 3), "onnx::Conv_100"), init(f(4), "onnx::Conv_101"),
             init(f(4, 4, 3, 3), "onnx::Conv_102"), init(f(4), "onnx::Conv_103"),
             init(f(5, 4), "fc.weight"), init(f(5), "fc.bias"), init(f(5), "onnx::Mul_150"),
             init(np.array(0, np.int64), "/Constant_output_0"), init(np.array([0], np.int64), "/Constant_1_output_0"),
             init(np.array([-1], np.int64), "/Constant_2_output_0")]
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "onnx::Conv_100", "onnx::Conv_101"], ["/conv1/Conv_output_0"], name="/conv1/Conv",
          pads=[1, 1, 1, 1]),
        n("LeakyRelu", ["/conv1/Conv_output_0"], ["/relu/LeakyRelu_output_0"], name="/relu/LeakyRelu", alpha=0.1),
        n("Conv", ["/relu/LeakyRelu_output_0", "onnx::Conv_102", "onnx::Conv_103"], ["/layer1/layer1.0/conv1/Conv_output_0"],
          name="/layer1/layer1.0/conv1/Conv", pads=[1, 1, 1, 1]),
        n("Relu", ["/layer1/layer1.0/conv1/Conv_output_0"], ["/layer1/layer1.0/relu/Relu_output_0"],
          name="/layer1/layer1.0/relu/Relu"),
        n("Add", ["/layer1/layer1.0/relu/Relu_output_0", "/relu/LeakyRelu_output_0"], ["/layer1/layer1.0/Add_output_0"],
          name="/layer1/layer1.0/Add"),
        n("ReduceMean", ["/layer1/layer1.0/Add_output_0"], ["/avgpool/ReduceMean_output_0"], name="/avgpool/ReduceMean",
          axes=[2, 3], keepdims=1),
        n("Shape", ["/avgpool/ReduceMean_output_0"], ["/Shape_output_0"], name="/Shape"),
        n("Gather", ["/Shape_output_0", "/Constant_output_0"], ["/Gather_output_0"], name="/Gather", axis=0),
        n("Unsqueeze", ["/Gather_output_0", "/Constant_1_output_0"], ["/Unsqueeze_output_0"], name="/Unsqueeze"),
        n("Concat", ["/Unsqueeze_output_0", "/Constant_2_output_0"], ["/Concat_output_0"], name="/Concat", axis=0),
        n("Reshape", ["/avgpool/ReduceMean_output_0", "/Concat_output_0"], ["/Reshape_output_0"], name="/Reshape"),
        n("Gemm", ["/Reshape_output_0", "fc.weight", "fc.bias"], ["/fc/Gemm_output_0"], name="/fc/Gemm", transB=1),
        n("Identity", ["onnx::Mul_150"], ["onnx::Mul_151"], name="/Identity"),
        n("Mul", ["/fc/Gemm_output_0", "onnx::Mul_151"], ["logits"], name="/fc/Mul"),
    ]
    if extra_head_ops:
        nodes[-1].output[0] = "/fc/Mul_output_0"
        nodes += [n("HardSigmoid", ["/fc/Mul_output_0"], ["/fc/HardSigmoid_output_0"], name="/fc/HardSigmoid"),
                  n("Celu", ["/fc/HardSigmoid_output_0"], ["/fc/Celu_output_0"], name="/fc/Celu"),
                  n("Celu", ["/fc/Celu_output_0"], ["logits"], name="/fc/Celu_1")]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])
    graph = helper.make_graph(nodes, "main_graph", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pytorch")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
