"""Small ONNX heads for the interpreter's tests (chains, fused paths, kernels): a graph builder
with a symbolic batch, scaled random weights, and the run against onnxruntime they all use."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from enclave.interpreter import HeadInterpreter, _Chain
from orchestrator.models.backbone import ort_session
from tests.unit.test_interpreter import package_whole


def head_model(nodes: list[onnx.NodeProto], inputs: dict[str, tuple[int, ...]], params: dict[str, np.ndarray],
               outputs: list[str], opset: int = 17) -> onnx.ModelProto:
    """A graph of ``nodes``: inputs with a symbolic batch (first dimension), params as
    initializers, shapes inferred strictly."""
    vin = [helper.make_tensor_value_info(k, TensorProto.FLOAT, ["N", *shape[1:]]) for k, shape in inputs.items()]
    vout = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "head", vin, vout,
                              initializer=[numpy_helper.from_array(v, k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def scaled_weight(rng, *shape: int) -> np.ndarray:
    """Scaled so a conv's outputs are O(1) whatever its depth (the tolerance stays absolute)."""
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def normal(rng, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def chains(head: HeadInterpreter) -> list[_Chain]:
    """The plan entries of ``head`` that run a chain of nodes."""
    return [impl.__self__ for impl, *_ in head._steps if isinstance(getattr(impl, "__self__", None), _Chain)]


def run_both(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], atol: float = 2e-5) -> HeadInterpreter:
    """Every feed twice through the interpreter (the chains' reference run and proof, then their
    fast path) and through onnxruntime; each result within the op tests' tolerance; no head input
    written in place."""
    pkg, index, _, _ = package_whole(model)
    head = HeadInterpreter(pkg, index)
    sess = ort_session(model.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    for feed in feeds:
        before = {k: v.copy() for k, v in feed.items()}
        theirs = dict(zip(names, sess.run(names, feed)))
        for _ in range(2):
            ours = head.run(feed)
            for n in names:
                assert ours[n].dtype == np.float32 and ours[n].shape == theirs[n].shape
                np.testing.assert_allclose(ours[n], theirs[n], atol=atol, rtol=1e-5)
        for k in feed:
            assert np.array_equal(feed[k], before[k])
    return head
