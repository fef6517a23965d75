"""The operators added for real heads (face, OCR, transformer, tree models), each against
onnxruntime on random shapes and attributes drawn from a fixed seed (printed on failure: the
test id carries the draw number and the seed is ``SEED``)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.unit.test_interpreter import compare

SEED = 20240611
DRAWS = 4
#: more draws for operators with several code paths (Conv: pointwise, depthwise, grouped, dense)
EXTRA_DRAWS = {"Conv": 16, "MatMul": 16, "Gemm": 12}


def _model(op: str, inputs: dict[str, np.ndarray], params: dict[str, np.ndarray], opset: int,
           n_outputs: int = 1, **attrs) -> onnx.ModelProto:
    """One node; inputs are graph inputs with a symbolic batch, params initializers (any dtype)."""
    names = list(inputs) + list(params)
    outs = ["y"] + [f"y{i}" for i in range(1, n_outputs)]
    node = helper.make_node(op, names, outs, name=f"the_{op.lower()}", **attrs)
    vin = [helper.make_tensor_value_info(k, TensorProto.FLOAT, ["N", *v.shape[1:]]) for k, v in inputs.items()]
    vout = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    graph = helper.make_graph([node], "t", vin, vout,
                              initializer=[numpy_helper.from_array(v, k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _shape(rng, rank: int, lo: int = 1, hi: int = 5) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(lo, hi + 1, size=rank))


def _f(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _i64(v) -> np.ndarray:
    return np.asarray(v, dtype=np.int64)


def _draw(op: str, rng) -> tuple[dict, dict, dict, int]:
    """(inputs, params, attrs, opset) for one random instance of ``op``."""
    rank = int(rng.integers(2, 5))
    shape = _shape(rng, rank)
    x = _f(rng, *shape)
    if op in ("Mul", "Sub", "Div", "Add_bcast"):
        # broadcast a parameter over trailing dimensions
        k = int(rng.integers(0, rank))
        b = _f(rng, *shape[k:])
        if op == "Div":
            b = np.where(np.abs(b) < 0.2, 0.5, b).astype(np.float32)
        return {"x": x}, {"b": b}, {}, int(rng.choice([13, 14, 17]))
    if op == "Pow":
        return {"x": np.abs(x) + 0.1}, {"e": np.array(float(rng.choice([0.5, 2.0, 3.0])), np.float32)}, {}, 15
    if op in ("Sqrt",):
        return {"x": np.abs(x)}, {}, {}, 13
    if op in ("Exp", "Neg", "Abs", "Erf", "Tanh", "Sigmoid"):
        return {"x": x * 2}, {}, {}, 13
    if op == "PRelu":
        slope = _f(rng, shape[1], *([1] * (rank - 2))) if rng.random() < 0.7 else _f(rng, 1)
        return {"x": x}, {"s": slope}, {}, 16
    if op == "Gelu":
        return {"x": x * 3}, {}, {"approximate": str(rng.choice(["none", "tanh"]))}, 20
    if op in ("ReduceMean", "ReduceL2", "ReduceSum", "ReduceMax"):
        axes = sorted(rng.choice(np.arange(1, rank), size=int(rng.integers(1, rank)), replace=False).tolist())
        if rng.random() < 0.5:
            axes = [a - rank for a in axes]
        keep = int(rng.integers(0, 2))
        if rng.random() < 0.5:
            return {"x": x}, {}, {"axes": axes, "keepdims": keep}, 12 if op == "ReduceSum" else 13
        return {"x": x}, {"axes": _i64(axes)}, {"keepdims": keep}, 13 if op == "ReduceSum" else 18
    if op == "Transpose":
        perm = [0] + (rng.permutation(rank - 1) + 1).tolist()
        return {"x": x}, {}, {"perm": perm}, 13
    if op in ("Squeeze", "Unsqueeze"):
        if op == "Squeeze":
            shape = list(shape)
            axes = sorted({int(a) for a in rng.integers(1, rank, size=2)})
            for a in axes:
                shape[a] = 1
            x = _f(rng, *shape)
        else:
            axes = sorted({int(a) for a in rng.integers(1, rank + 1, size=2)})
        if rng.random() < 0.5:
            return {"x": x}, {}, {"axes": axes}, 11
        return {"x": x}, {"axes": _i64(axes)}, {}, 13
    if op == "Expand":
        base = list(shape)
        k = int(rng.integers(1, rank))
        base[k] = 1
        x = _f(rng, *base)
        target = [1] * rank
        target[k] = int(rng.integers(2, 5))
        return {"x": x}, {"shape": _i64(target)}, {}, 13
    if op == "Gather":
        if rng.random() < 0.5:   # embedding lookup: parameter table, constant indices -> gather from input
            axis = int(rng.integers(1, rank))
            idx = rng.integers(-shape[axis], shape[axis], size=_shape(rng, int(rng.integers(0, 3)), 1, 3))
            return {"x": x}, {"idx": _i64(idx)}, {"axis": axis}, 13
        axis = int(rng.integers(1, rank))
        return {"x": x}, {"idx": _i64(int(rng.integers(0, shape[axis])))}, {"axis": axis}, 13
    if op == "LayerNormalization":
        axis = int(rng.integers(1, rank))
        norm = shape[axis:]
        params = {"scale": _f(rng, *norm)}
        if rng.random() < 0.7:
            params["bias"] = _f(rng, *norm)
        attrs = {"axis": axis if rng.random() < 0.5 else axis - rank,
                 "epsilon": float(rng.choice([1e-5, 1e-6, 1e-3]))}
        return {"x": x}, params, attrs, 17
    if op == "Conv":   # pointwise, depthwise, grouped and dense forms, random windows
        form = ["pointwise", "depthwise", "grouped", "dense"][int(rng.integers(0, 4))]
        group = int(rng.integers(2, 4)) if form == "grouped" else 1
        c = group * int(rng.integers(1, 4)) if form != "depthwise" else int(rng.integers(2, 6))
        m = c if form == "depthwise" else group * int(rng.integers(1, 4))
        group = c if form == "depthwise" else group
        k = (1, 1) if form == "pointwise" else tuple(int(v) for v in rng.integers(1, 4, size=2))
        h, w_ = (int(v) for v in rng.integers(4, 9, size=2))
        attrs = {"group": group}
        if form == "pointwise" and rng.random() < 0.5:
            attrs["strides"] = [int(v) for v in rng.integers(1, 3, size=2)]
        if form != "pointwise":
            attrs.update(strides=[int(v) for v in rng.integers(1, 3, size=2)],
                         pads=[int(v) for v in rng.integers(0, 2, size=4)],
                         dilations=[int(v) for v in rng.integers(1, 3, size=2)])
        params = {"w": _f(rng, m, c // group, *k)}
        if rng.random() < 0.7:
            params["b"] = _f(rng, m)
        return {"x": _f(rng, int(rng.integers(1, 3)), c, h, w_)}, params, attrs, 17
    if op in ("LogSoftmax", "Softmax"):
        opset = int(rng.choice([11, 13, 17]))   # < 13: the 2-D coercion at axis
        axis = int(rng.integers(-rank, rank))
        return {"x": x * 4}, {}, {"axis": axis}, opset
    if op == "MatMul":
        form = int(rng.integers(0, 4))
        b = _shape(rng, 1)[0]
        if form == 0:   # a stacked weight broadcast over the batch: numpy
            batch = _shape(rng, int(rng.integers(1, 3)))
            m, k, n = _shape(rng, 3, 1, 9)
            return {"a": _f(rng, b, *batch, m, k)}, {"w": _f(rng, *batch, k, n)}, {}, 13
        # row and column counts around the kernel's 6 x 16 tiles and its half panel
        m, k, n = int(rng.integers(1, 41)), int(rng.integers(1, 71)), int(rng.integers(1, 41))
        if form == 1:   # by a 2-D weight: the packed kernel over all the leading rows
            lead = _shape(rng, int(rng.integers(0, 3)))
            return {"a": _f(rng, b, *lead, m, k)}, {"w": _f(rng, k, n)}, {}, 13
        if form == 2:   # two computed operands of the same batch: the batched kernel
            heads = _shape(rng, int(rng.integers(0, 2)))
            return {"a": _f(rng, b, *heads, m, k), "b": _f(rng, b, *heads, k, n)}, {}, {}, 13
        # form 3: more rows than the kernels take: numpy
        return {"a": _f(rng, b, int(rng.integers(129, 160)), k)}, {"w": _f(rng, k, n)}, {}, 13
    if op == "Gemm":
        trans_a, trans_b = (int(v) for v in rng.integers(0, 2, size=2))
        m, k, n = int(rng.integers(1, 20)), int(rng.integers(1, 71)), int(rng.integers(1, 41))
        attrs = {"transA": trans_a, "transB": trans_b, "alpha": float(rng.choice([1.0, 0.5])),
                 "beta": float(rng.choice([1.0, 2.0]))}
        params = {"w": _f(rng, *((n, k) if trans_b else (k, n)))}
        c_shape = [(n,), (1, n), (m, n), None][int(rng.integers(0, 4))]
        if c_shape is not None:
            params["c"] = _f(rng, *c_shape)
        return {"a": _f(rng, *((k, m) if trans_a else (m, k)))}, params, attrs, 13
    raise AssertionError(op)


NEW_OPS = ["Mul", "Sub", "Div", "Pow", "Sqrt", "Exp", "Neg", "Abs", "Erf", "PRelu", "Gelu", "ReduceMean",
           "ReduceL2", "ReduceSum", "ReduceMax", "Transpose", "Squeeze", "Unsqueeze", "Expand", "Gather",
           "LayerNormalization", "MatMul", "Tanh", "Sigmoid", "LogSoftmax", "Softmax", "Conv", "Gemm"]
CASES = [(op, k) for op in NEW_OPS for k in range(EXTRA_DRAWS.get(op, DRAWS))]


@pytest.mark.parametrize("op, k", CASES, ids=[f"{op}-draw{k}-seed{SEED}" for op, k in CASES])
def test_operator_matches_onnxruntime_on_random_draws(op, k):
    rng = np.random.default_rng([SEED, NEW_OPS.index(op), k])
    inputs, params, attrs, opset = _draw(op, rng)
    print(f"seed={SEED} op={op} draw={k} opset={opset} inputs={ {n: v.shape for n, v in inputs.items()} } "
          f"params={ {n: v.shape for n, v in params.items()} } attrs={attrs}")
    compare(_model(op, inputs, params, opset, **attrs), inputs, atol=2e-5)


def test_constant_only_inputs_must_be_parameters():
    """Expand's shape, Gather's indices, Reshape's shape must be parameters of the head."""
    from enclave.interpreter import node_problems
    from enclave.package import NodeSpec
    node = NodeSpec("ex", "Expand", ("x", "s"), ("y",), {})
    assert node_problems(node, 17, {}) == ["input 1 ('s') must be a constant (a parameter of the head), it is computed"]
    assert "must be int64" in node_problems(node, 17, {"s": "float32"})[0]
    assert node_problems(node, 17, {"s": "int64"}) == []


def test_opset_dependent_forms_refused_outside_their_range():
    from enclave.interpreter import node_problems
    from enclave.package import NodeSpec
    # axes as an attribute after opset 17 / as an input before 18
    assert any("does not exist in opset 18" in p for p in
               node_problems(NodeSpec("r", "ReduceMean", ("x",), ("y",), {"axes": [1]}), 18, {}))
    assert any("outside" in p for p in node_problems(NodeSpec("r", "ReduceMean", ("x", "a"), ("y",), {}), 13,
                                                      {"a": "int64"}))
    assert any("opsets 20" in p for p in node_problems(NodeSpec("g", "Gelu", ("x",), ("y",), {}), 17, {}))
    assert any("opsets 17" in p for p in node_problems(NodeSpec("l", "LayerNormalization", ("x", "s"), ("y",), {}),
                                                        16, {}))
