"""Export of a trained network to ONNX, checked by the ONNX checker and by onnxruntime.

The graph is built from the trained layer objects themselves (:meth:`Layer.onnx`), with
opset 17 and IR version 8 so that any current runtime loads it, a symbolic batch dimension
``N``, and the parameters as float32 initializers named ``<node>.weight`` / ``<node>.bias``.
The serialised bytes depend only on the weights, so the same training run gives the same file.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper

from splitseal.errors import ModelError

from .models import INPUT_NAME, Network

log = logging.getLogger(__name__)

OPSET = 17
IR_VERSION = 8
#: Largest |numpy - onnxruntime| accepted when checking an export.
EXPORT_TOLERANCE = 1e-5


def to_onnx(network: Network) -> onnx.ModelProto:
    """The exported part of ``network`` as a checked ONNX model."""
    spec = network.spec
    layers = network.exported.layers
    nodes: list[onnx.NodeProto] = []
    initializers: list[TensorProto] = []
    current = INPUT_NAME
    for i, layer in enumerate(layers):
        out = spec.output_name if i == len(layers) - 1 else f"{layer.name}.out"
        layer_nodes, layer_inits = layer.onnx(current, out)
        nodes += layer_nodes
        initializers += layer_inits
        current = out
    side = spec.input_size
    graph = helper.make_graph(
        nodes, spec.name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, ["N", spec.output_dim])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="splitseal", producer_version="1",
                              doc_string=spec.description)
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"splitseal.model": spec.name, "splitseal.kind": spec.kind,
                                   "splitseal.input_size": str(side)})
    check(model)
    return model


def check(model: onnx.ModelProto) -> None:
    """Run the ONNX checker (full, with shape inference); raise ModelError naming the problem."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"exported model {model.graph.name!r} fails the ONNX checker: {exc}") from None


def run_onnxruntime(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Run a single-input, single-output model on onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"expected a model with one input, got {[i.name for i in inputs]}")
    return session.run(None, {inputs[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def max_abs_diff_vs_onnxruntime(network: Network, model_bytes: bytes, x: np.ndarray) -> float:
    """Largest absolute difference between the numpy forward pass and onnxruntime on ``x``."""
    ours = network.predict(np.asarray(x, dtype=np.float32))
    theirs = run_onnxruntime(model_bytes, x)
    if ours.shape != theirs.shape:
        raise ModelError(f"numpy output shape {ours.shape} != onnxruntime output shape {theirs.shape}")
    return float(np.max(np.abs(ours.astype(np.float64) - theirs.astype(np.float64))))
