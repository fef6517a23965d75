"""Shape-only subgraphs folded at split time (orchestrator/models/fold.py): the folded model gives
the same outputs as the original at batch sizes other than the two it was probed with, its shape
arithmetic is gone, and what cannot be folded batch-agnostically is left as it is."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from orchestrator.models import load_model
from orchestrator.models.backbone import ort_session
from orchestrator.models.fold import fold_shape_subgraphs

SEED = 3


def _model(nodes, inits, out_shape, in_shape=("N", 4, 3)) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _i64(name, v):
    return numpy_helper.from_array(np.asarray(v, np.int64), name)


def _same_outputs(original: onnx.ModelProto, folded: onnx.ModelProto, in_shape=(4, 3)) -> None:
    rng = np.random.default_rng(SEED)
    a, b = ort_session(original.SerializeToString()), ort_session(folded.SerializeToString())
    for batch in (1, 4, 7):   # the probe ran at 2 and 3
        x = rng.standard_normal((batch, *in_shape)).astype(np.float32)
        np.testing.assert_allclose(a.run(["y"], {"x": x})[0], b.run(["y"], {"x": x})[0], rtol=1e-6, atol=1e-6)


def _ops(m: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in m.graph.node}


def test_view_through_shape_slice_concat_becomes_a_batch_agnostic_reshape():
    n = helper.make_node
    nodes = [n("Relu", ["x"], ["r"]), n("Shape", ["r"], ["s"]),
             n("Slice", ["s", "zero", "one"], ["s0"]),
             n("Concat", ["s0", "minus1"], ["target"], axis=0),
             n("Reshape", ["r", "target"], ["y"])]
    m = _model(nodes, [_i64("zero", [0]), _i64("one", [1]), _i64("minus1", [12])], ["N", 12])
    folded = onnx.ModelProto()
    folded.CopyFrom(m)
    assert fold_shape_subgraphs(folded)
    assert _ops(folded) == {"Relu", "Reshape"}
    (target,) = [numpy_helper.to_array(t) for t in folded.graph.initializer if t.name.endswith("__batch_agnostic")]
    assert target.tolist() == [-1, 12]
    _same_outputs(m, folded)


def test_l2_normalise_expand_as_and_a_cast_sqrt_scale_fold():
    n = helper.make_node
    nodes = [n("ReduceL2", ["x"], ["norm"], axes=[2], keepdims=1), n("Shape", ["x"], ["s"]),
             n("Expand", ["norm", "s"], ["e"]), n("Div", ["x", "e"], ["d"]),
             n("Gather", ["s", "two"], ["last"], axis=0), n("Cast", ["last"], ["lastf"], to=TensorProto.FLOAT),
             n("Sqrt", ["lastf"], ["scale"]), n("Mul", ["d", "scale"], ["y"])]
    m = _model(nodes, [_i64("two", 2)], ["N", 4, 3])
    imp = load_model(m.SerializeToString())   # the split's loader folds before importing
    assert {n.op_type for n in imp.nodes} == {"ReduceL2", "Expand", "Div", "Mul"}
    assert imp.source_bytes == m.SerializeToString()   # the registered hash is the file's
    folded = onnx.load_model_from_string(imp.serialize())
    _same_outputs(m, folded)


def test_a_zero_rnn_initial_state_built_from_the_shape_is_dropped():
    hs = 5
    rng = np.random.default_rng(SEED)
    n = helper.make_node
    nodes = [n("Transpose", ["x"], ["t"], perm=[1, 0, 2]), n("Shape", ["t"], ["s"]),
             n("Gather", ["s", "one"], ["b"], axis=0), n("Unsqueeze", ["b", "zero"], ["b1"]),
             n("Concat", ["dirs", "b1", "hsz"], ["hshape"], axis=0),
             n("ConstantOfShape", ["hshape"], ["h0"], value=numpy_helper.from_array(np.zeros(1, np.float32))),
             n("LSTM", ["t", "W", "R", "B", "", "h0", "h0"], ["Y"], hidden_size=hs),
             n("Squeeze", ["Y", "dirs_axis"], ["ys"]), n("Transpose", ["ys"], ["y"], perm=[1, 0, 2])]
    inits = [_i64("one", 1), _i64("zero", [0]), _i64("dirs", [1]), _i64("hsz", [hs]), _i64("dirs_axis", [1]),
             numpy_helper.from_array(rng.standard_normal((1, 4 * hs, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((1, 4 * hs, hs)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.standard_normal((1, 8 * hs)).astype(np.float32), "B")]
    m = _model(nodes, inits, ["N", 4, hs])
    folded = onnx.ModelProto()
    folded.CopyFrom(m)
    assert fold_shape_subgraphs(folded)
    assert _ops(folded) == {"Transpose", "LSTM", "Squeeze"}
    (lstm,) = [x for x in folded.graph.node if x.op_type == "LSTM"]
    assert list(lstm.input)[5:] == ["", ""]
    _same_outputs(m, folded)


def test_a_reshape_whose_target_varies_in_two_places_is_left_as_it_is():
    n = helper.make_node
    nodes = [n("Shape", ["x"], ["s"]), n("Gather", ["s", "zero"], ["b"], axis=0),
             n("Unsqueeze", ["b", "axis0"], ["b1"]), n("Concat", ["b1", "b1", "minus1"], ["target"], axis=0),
             n("Reshape", ["x", "target"], ["y"])]
    m = _model(nodes, [_i64("zero", 0), _i64("axis0", [0]), _i64("minus1", [-1])], ["N", "N", None])
    folded = onnx.ModelProto()
    folded.CopyFrom(m)
    assert not fold_shape_subgraphs(folded)
    assert folded == m


@pytest.mark.parametrize("in_shape", [(2, 4, 3), ("N", "T", 3)])
def test_models_without_a_probe_are_left_as_they_are(in_shape):
    """A fixed batch (the symbolic folder's job) or a second dynamic dimension: nothing to run."""
    n = helper.make_node
    nodes = [n("Shape", ["x"], ["s"]), n("Reshape", ["x", "s"], ["y"])]
    m = _model(nodes, [], list(in_shape), in_shape=in_shape)
    folded = onnx.ModelProto()
    folded.CopyFrom(m)
    assert not fold_shape_subgraphs(folded)
