"""LSTM and GRU in the enclave interpreter against onnxruntime, on random shapes drawn from a fixed
seed (printed; the test id carries the draw), in the forms PyTorch exports (one layer per node,
default activations, layout 0, forward or bidirectional, with and without initial states, no
sequence_lens), and the variants the interpreter refuses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from enclave.interpreter import node_problems
from enclave.package import NodeSpec
from splitseal.errors import UnsupportedOperatorError
from tests.unit.test_interpreter import compare, package_whole

RNN_OPS: list[str] = ["LSTM", "GRU"]
SEED = 20240917
DRAWS = 6


def _f(rng, *shape) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.6).astype(np.float32)


def rnn_model(op: str, rng, *, direction: str, initial: str, seq: int, batch: int, inp: int, hidden: int,
              opset: int = 17, **attrs) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One LSTM/GRU node as torch.onnx writes it: inputs X, W, R, B, "" (sequence_lens), initial_h
    (and initial_c); ``initial`` is "none", "param" (initializers) or "input" (computed tensors)."""
    gates = 4 if op == "LSTM" else 3
    nd = 2 if direction == "bidirectional" else 1
    feed = {"x": _f(rng, seq, batch, inp) * 2}
    params = {"W": _f(rng, nd, gates * hidden, inp), "R": _f(rng, nd, gates * hidden, hidden),
              "B": _f(rng, nd, 2 * gates * hidden)}
    names = ["x", "W", "R", "B"]
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    if initial != "none":
        names.append("")
        for s in states:
            value = _f(rng, nd, batch, hidden)
            names.append(s)
            (feed if initial == "input" else params)[s] = value
    outs = ["y", "y_h", "y_c"] if op == "LSTM" else ["y", "y_h"]
    if direction != "forward":
        attrs["direction"] = direction
    node = helper.make_node(op, names, outs, name=f"the_{op.lower()}", hidden_size=hidden, **attrs)
    vin = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in feed.items()]
    vout = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    graph = helper.make_graph([node], "rnn", vin, vout,
                              initializer=[numpy_helper.from_array(v, k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return onnx.shape_inference.infer_shapes(model, strict_mode=True), feed


CASES = [(op, k) for op in RNN_OPS for k in range(DRAWS)]


@pytest.mark.parametrize("op, k", CASES, ids=[f"{op}-draw{k}-seed{SEED}" for op, k in CASES])
def test_rnn_matches_onnxruntime_on_random_draws(op, k):
    rng = np.random.default_rng([SEED, RNN_OPS.index(op), k])
    draw = dict(direction=("forward", "bidirectional", "reverse")[k % 3],
                initial=("none", "param", "input")[(k // 3 + k) % 3],
                seq=int(rng.integers(1, 9)), batch=int(rng.integers(1, 5)), inp=int(rng.integers(1, 9)),
                hidden=int(rng.integers(1, 9)), opset=int(rng.choice([11, 14, 17, 22])))
    if op == "GRU":
        draw["linear_before_reset"] = int(k % 2)   # torch writes 1
    print(f"seed={SEED} op={op} draw={k} {draw}")
    model, feed = rnn_model(op, rng, **draw)
    compare(model, feed, atol=3e-5)


def test_default_activations_spelled_out_are_accepted():
    rng = np.random.default_rng(SEED)
    model, feed = rnn_model("LSTM", rng, direction="bidirectional", initial="none", seq=3, batch=2, inp=4,
                            hidden=5, activations=["Sigmoid", "Tanh", "Tanh"] * 2)
    compare(model, feed, atol=3e-5)


@pytest.mark.parametrize("op, attrs, why", [
    ("LSTM", {"activations": ["Sigmoid", "Relu", "Tanh"]}, "activations"),
    ("GRU", {"activations": ["HardSigmoid", "Tanh"]}, "activations"),
    ("LSTM", {"clip": 2.0}, "clip"),
    ("LSTM", {"input_forget": 1}, "input_forget"),
    ("GRU", {"layout": 1}, "layout 1"),
])
def test_other_variants_are_refused_at_run_time(op, attrs, why):
    from enclave.interpreter import HeadInterpreter
    rng = np.random.default_rng(SEED)
    if "layout" in attrs:
        model, feed = _layout1(op, rng)
    else:
        model, feed = rnn_model(op, rng, direction="forward", initial="none", seq=3, batch=2, inp=4, hidden=5,
                                **attrs)
    pkg, index, _, _ = package_whole(model)
    with pytest.raises(UnsupportedOperatorError, match=why):
        HeadInterpreter(pkg, index).run(feed)


def _layout1(op, rng):
    """layout=1 ([batch, seq, input]) built by hand (onnxruntime and shape inference accept it)."""
    gates = 4 if op == "LSTM" else 3
    x = _f(rng, 2, 3, 4)
    params = {"W": _f(rng, 1, gates * 5, 4), "R": _f(rng, 1, gates * 5, 5)}
    node = helper.make_node(op, ["x", "W", "R"], ["y"], name="rnn", hidden_size=5, layout=1)
    graph = helper.make_graph([node], "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return onnx.shape_inference.infer_shapes(model, strict_mode=True), {"x": x}


def test_sequence_lens_and_peepholes_are_refused():
    from enclave.interpreter import HeadInterpreter
    rng = np.random.default_rng(SEED)
    for extra in ("seq", "peephole"):
        x = _f(rng, 3, 2, 4)
        params = {"W": _f(rng, 1, 20, 4), "R": _f(rng, 1, 20, 5), "B": _f(rng, 1, 40)}
        names = ["x", "W", "R", "B"]
        if extra == "seq":
            params["L"] = np.array([3, 2], np.int32)
            names.append("L")
        else:
            params["P"] = _f(rng, 1, 15)
            names += ["", "", "", "P"]
        node = helper.make_node("LSTM", names, ["y"], name="rnn", hidden_size=5)
        graph = helper.make_graph([node], "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  initializer=[numpy_helper.from_array(v, k) for k, v in params.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        if extra == "seq":   # an int32 parameter cannot even enter a head package
            with pytest.raises(Exception, match="int32"):
                package_whole(model)
            continue
        pkg, index, _, _ = package_whole(model)
        with pytest.raises(UnsupportedOperatorError, match="peephole"):
            HeadInterpreter(pkg, index).run({"x": x})


def test_weights_must_be_head_parameters_and_layout_needs_opset_14():
    node = NodeSpec("l", "LSTM", ("x", "w", "r"), ("y",), {"hidden_size": 4})
    assert any("must be a constant" in p for p in node_problems(node, 17, {"r": "float32"}))
    assert node_problems(node, 17, {"w": "float32", "r": "float32"}) == []
    node = NodeSpec("l", "GRU", ("x", "w", "r"), ("y",), {"hidden_size": 4, "layout": 0})
    assert any("does not exist in opset 13" in p for p in node_problems(node, 13, {"w": "float32", "r": "float32"}))


# --- a CRNN-style head, split and served through the interpreter ------------------------------

def crnn_model(rng, *, classes: int = 7, hidden: int = 6) -> onnx.ModelProto:
    """What torch.onnx writes for a small CRNN with a dynamic batch: Conv -> Relu (the public
    backbone) -> Squeeze(H) -> Transpose to [W, N, C] -> bidirectional LSTM -> Transpose ->
    Reshape [0, 0, -1] -> MatMul + Add -> Softmax -> Transpose to [N, W, classes]."""
    c, width = 5, 8
    inits = {"conv.weight": _f(rng, c, 1, 4, 3), "conv.bias": _f(rng, c), "sq_axes": np.array([2], np.int64),
             "rnn.W": _f(rng, 2, 4 * hidden, c), "rnn.R": _f(rng, 2, 4 * hidden, hidden),
             "rnn.B": _f(rng, 2, 8 * hidden), "shape": np.array([0, 0, -1], np.int64),
             "fc.weight": _f(rng, 2 * hidden, classes), "fc.bias": _f(rng, classes)}
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["conv.out"], name="/conv/Conv", pads=[0, 1, 0, 1]),
        helper.make_node("Relu", ["conv.out"], ["features"], name="/relu/Relu"),
        helper.make_node("Squeeze", ["features", "sq_axes"], ["seq.in"], name="/Squeeze"),
        helper.make_node("Transpose", ["seq.in"], ["seq.t"], name="/Transpose", perm=[2, 0, 1]),
        helper.make_node("LSTM", ["seq.t", "rnn.W", "rnn.R", "rnn.B"], ["rnn.y", "rnn.h", "rnn.c"],
                         name="/rnn/LSTM", hidden_size=hidden, direction="bidirectional"),
        helper.make_node("Transpose", ["rnn.y"], ["rnn.yt"], name="/rnn/Transpose", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["rnn.yt", "shape"], ["rnn.flat"], name="/rnn/Reshape"),
        helper.make_node("MatMul", ["rnn.flat", "fc.weight"], ["fc.mm"], name="/fc/MatMul"),
        helper.make_node("Add", ["fc.mm", "fc.bias"], ["fc.out"], name="/fc/Add"),
        helper.make_node("Softmax", ["fc.out"], ["probs.t"], name="/Softmax", axis=-1),
        helper.make_node("Transpose", ["probs.t"], ["probs"], name="/out/Transpose", perm=[1, 0, 2]),
    ]
    graph = helper.make_graph(nodes, "crnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, width])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", width, classes])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def test_crnn_head_split_and_served_through_the_interpreter_equals_onnxruntime():
    from enclave.interpreter import HeadInterpreter
    from orchestrator.models import load_model
    from orchestrator.models.backbone import ort_session
    from orchestrator.models.rule import parse_rule
    from orchestrator.models.split import random_samples, split_model

    rng = np.random.default_rng([SEED, 99])
    model = crnn_model(rng)
    imp = load_model(model.SerializeToString())
    rule = parse_rule(b'version=1\n[split]\nat_tensor="features"\n[protect]\nparameters=["*"]\n'
                      b'[output]\npolicy="features"\n')
    res = split_model(imp, rule, random_samples(imp, n=9, seed=SEED))
    assert res.crossing == ["features"]
    assert {"rnn.W", "rnn.R", "rnn.B", "fc.weight", "fc.bias"} <= set(res.protected)
    assert res.verification.max_abs_diff_interpreter < 1e-5
    # the head graph carries the batch inside the LSTM's output ([seq, dirs, batch, hidden])
    assert res.head_graph.values["rnn.y"].shape == (8, 2, None, 6)
    head = HeadInterpreter(res.package, res.index)
    whole = ort_session(model.SerializeToString())
    for n in (1, 4):
        x = rng.random((n, 1, 4, 8), dtype=np.float32)
        feats = ort_session(res.backbone_bytes).run(["features"], {"x": x})[0]
        got = head.run({"features": feats})["probs"]
        np.testing.assert_allclose(got, whole.run(["probs"], {"x": x})[0], atol=1e-5, rtol=1e-5)
        assert got.shape == (n, 8, 7)
