"""The transformer-block kernels (enclave/csrc/vit.c): LayerNormalization, Softmax and Erf against
float64 references on row lengths around the kernels' lanes, NaN and infinity as numpy gives
them, every malformed buffer refused; view_copy as numpy's copy of the same view (and its Mul or
Div by one value as numpy's), every view reaching outside its buffer refused; and the interpreter's chains writing LayerNormalization
into their own arrays, against onnxruntime. Random draws from fixed seeds (in the test ids)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from enclave import native
from enclave.interpreter import _LAYERNORM
from tests.support.head_graphs import chains, head_model, normal, run_both

SEED = 20261202


@pytest.fixture(scope="module")
def vit():
    return native.load("vit")


def _layernorm_ref(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, eps: float) -> np.ndarray:
    xd = x.astype(np.float64)
    y = (xd - xd.mean(-1, keepdims=True)) / np.sqrt(xd.var(-1, keepdims=True) + eps) * scale
    return y + bias if bias is not None else y


@pytest.mark.parametrize("rows,n", [(1, 1), (3, 7), (17, 8), (5, 9), (17, 64), (4, 768), (0, 5)])
def test_layernorm_matches_float64_with_and_without_bias_and_in_place(vit, rows, n):
    rng = np.random.default_rng([SEED, rows, n])
    x = (rng.standard_normal((rows, n)) * 3 + 2).astype(np.float32)
    scale, bias = normal(rng, n), normal(rng, n)
    for b in (bias, None):
        out = np.full_like(x, np.nan)
        vit.layernorm(x, scale, b, out, rows, n, 1e-5)
        np.testing.assert_allclose(out, _layernorm_ref(x, scale, b, 1e-5), atol=2e-6, rtol=1e-5)
        inplace = x.copy()
        vit.layernorm(inplace, scale, b, inplace, rows, n, 1e-5)
        assert np.array_equal(inplace, out)   # every element read before it is written


def _softmax_ref(x: np.ndarray) -> np.ndarray:
    xd = x.astype(np.float64)
    e = np.exp(xd - xd.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("outer,n,inner", [(68, 17, 1), (3, 1, 1), (2, 8, 1), (2, 9, 1), (40, 6625, 1),
                                           (3, 5, 3), (2, 4, 64), (2, 3, 65), (1, 7, 130), (0, 4, 2)])
def test_softmax_matches_float64_along_the_middle_axis(vit, outer, n, inner):
    rng = np.random.default_rng([SEED, outer, n, inner])
    x = (rng.standard_normal((outer, n, inner)) * 6).astype(np.float32)
    out = np.full_like(x, np.nan)
    vit.softmax(x, out, outer, n, inner)
    np.testing.assert_allclose(out, _softmax_ref(x), atol=1e-7, rtol=1e-5)
    vit.softmax(x, x, outer, n, inner)
    assert np.array_equal(x, out)


def test_softmax_propagates_nan_and_infinity_as_numpy_does(vit):
    x = np.array([[1, np.nan, 2], [np.inf, 0, 1], [-np.inf] * 3, [-np.inf, 0, -1000], [0, -90, -200]], np.float32)
    out = np.empty_like(x)
    vit.softmax(x, out, 5, 3, 1)
    with np.errstate(all="ignore"):
        e = np.exp(x - x.max(1, keepdims=True))
        expected = e / e.sum(1, keepdims=True)
    assert np.array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_allclose(out[3:], expected[3:], atol=1e-38, rtol=1e-6)   # e^-90: below the normals


def test_softmax_of_two_values_covers_exp_over_the_float_range(vit):
    """softmax([x, 0])[0] = e^x / (1 + e^x): the kernel's exp for x down to where it underflows."""
    xs = np.linspace(-100, 0, 200_001).astype(np.float32)
    pairs = np.stack([xs, np.zeros_like(xs)], 1)
    out = np.empty_like(pairs)
    vit.softmax(pairs, out, len(xs), 2, 1)
    ex = np.exp(xs.astype(np.float64))
    expected = ex / (1 + ex)
    normal_range = xs > -87.3
    np.testing.assert_allclose(out[normal_range, 0], expected[normal_range], rtol=3e-7)
    assert np.all(np.abs(out[~normal_range, 0] - expected[~normal_range]) < 1.2e-38)


def test_erf_within_its_formula_error(vit):
    rng = np.random.default_rng([SEED, 1])
    x = np.concatenate([rng.standard_normal(50_000) * 3, np.linspace(-6, 6, 10_001),
                        [0.0, -0.0, 1e-30, -1e-30, 30, -30, 1e30, np.inf, -np.inf, np.nan]]).astype(np.float32)
    out = np.empty_like(x)
    vit.erf(x, out, x.size)
    expected = np.array([math.erf(v) if not math.isnan(v) else math.nan for v in x.astype(np.float64)])
    finite = ~np.isnan(x)
    assert np.max(np.abs(out[finite] - expected[finite])) < 6e-7
    assert np.isnan(out[-1]) and np.signbit(out[-9]) and out[-3] == 1 and out[-2] == -1
    vit.erf(x, x, x.size)
    assert np.array_equal(x, out, equal_nan=True)


def test_the_kernels_refuse_malformed_buffers(vit):
    x = np.zeros((3, 4), np.float32)
    s = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="x: wrong item type"):
        vit.layernorm(x.astype(np.float64), s, None, x, 3, 4, 1e-5)
    with pytest.raises(ValueError, match="scale: 3 items, expected 4"):
        vit.layernorm(x, s[:3], None, x, 3, 4, 1e-5)
    with pytest.raises(ValueError, match="bias: 5 items, expected 4"):
        vit.layernorm(x, s, np.ones(5, np.float32), x, 3, 4, 1e-5)
    with pytest.raises(ValueError, match="out: 11 items, expected 12"):
        vit.layernorm(x, s, s, np.zeros(11, np.float32), 3, 4, 1e-5)
    with pytest.raises(ValueError, match="x: 12 items, expected 15"):
        vit.softmax(x, x, 3, 5, 1)
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        vit.softmax(x, x, -3, -4, 1)
    with pytest.raises(ValueError, match="sizes overflow"):
        vit.softmax(x, x, 1 << 40, 1 << 40, 1)
    with pytest.raises(ValueError, match="out: 4 items, expected 12"):
        vit.erf(x, np.zeros(4, np.float32), 12)
    with pytest.raises(ValueError):   # not contiguous: numpy refuses the buffer
        vit.erf(x.T, x, 12)
    frozen = np.zeros((3, 4), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError):   # a read-only output
        vit.erf(x, frozen, 12)


@pytest.mark.parametrize("tokens,dim,bias", [(17, 64, True), (5, 9, False), (3, 130, True)])
def test_a_chain_writes_layernorm_into_its_own_array(tokens, dim, bias):
    """A residual Add into LayerNormalization (a ViT block's ln_2): the chain normalises in the
    Add's output; a Transpose (a view) into LayerNormalization normalises a contiguous copy."""
    rng = np.random.default_rng([SEED, tokens, dim])
    ln_inputs = ["r", "scale"] + (["bias"] if bias else [])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="proj"),
             helper.make_node("Add", ["m", "x"], ["r"], name="residual"),
             helper.make_node("LayerNormalization", ln_inputs, ["n"], epsilon=1e-6, name="ln"),
             helper.make_node("Transpose", ["n"], ["t"], perm=[0, 2, 1], name="swap"),
             helper.make_node("LayerNormalization", ["t", "scale2"], ["y"], name="ln_t")]
    params = {"w": normal(rng, dim, dim) / np.float32(math.sqrt(dim)), "scale": normal(rng, dim),
              "scale2": normal(rng, tokens)}
    if bias:
        params["bias"] = normal(rng, dim)
    model = head_model(nodes, {"x": (1, tokens, dim)}, params, ["y"])
    head = run_both(model, [{"x": normal(rng, b, tokens, dim)} for b in (1, 2)])
    [chain] = chains(head)
    assert [n.kind for n in chain.nodes if n.step.node.op == "LayerNormalization"] == [_LAYERNORM] * 2
    assert all(v is not None for v in chain.shapes.values())


def test_layernorm_over_two_axes_broadcasts_its_scale_once():
    """Normalised over the last two axes with a Scale of one row: broadcast to the normalised
    shape and kept while the parameter is the same array."""
    rng = np.random.default_rng([SEED, 2])
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-2, name="ln")
    model = head_model([node], {"x": (1, 3, 4, 5)}, {"scale": normal(rng, 5), "bias": normal(rng, 4, 1)}, ["y"])
    head = run_both(model, [{"x": normal(rng, b, 3, 4, 5)} for b in (1, 3)])
    affine = head._plan[0].ctx.memo["affine"]
    assert affine[3].shape == (20,) and affine[4].shape == (20,)


ADD, SUB, RSUB, MUL, DIV, RDIV, ERF = range(7)
SCALAR, ROW, FULL = 1, 2, 3


def test_an_elementwise_program_is_numpys_ops_bit_for_bit(vit):
    """Each step is the IEEE float32 op numpy's ufunc does, in the program's order (rows longer
    than the kernel's chunk included)."""
    rng = np.random.default_rng([SEED, 3])
    for rows, n in [(17, 128), (3, 300), (1, 1), (4, 7)]:
        x = normal(rng, rows, n)
        c, row, full = np.float32(1.7), normal(rng, n), normal(rng, rows, n) + np.float32(3)
        program = bytes([DIV, SCALAR, 0, ERF, 0, 0, ADD, ROW, 1, RSUB, FULL, 2, MUL, SCALAR, 0, RDIV, ROW, 1,
                         SUB, FULL, 2])
        out = np.empty_like(x)
        vit.elementwise(x, out, rows, n, program, (np.array([c]), row, full))
        e = np.empty_like(x)
        vit.erf(x / c, e, x.size)
        expected = ((row / ((full - (e + row)) * c)) - full).astype(np.float32)
        assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))
        vit.elementwise(x, x, rows, n, program, (np.array([c]), row, full))
        assert np.array_equal(x, out)


@pytest.mark.parametrize("program,operands,match", [
    (bytes([ADD, SCALAR]), (np.ones(1, np.float32),), "not whole steps"),
    (bytes([ADD, SCALAR, 1]), (np.ones(1, np.float32),), "names operand 1 of 1"),
    (bytes([9, SCALAR, 0]), (np.ones(1, np.float32),), "op 9 with mode 1"),
    (bytes([ERF, SCALAR, 0]), (np.ones(1, np.float32),), "op 6 with mode 1"),
    (bytes([ADD, 0, 0]), (np.ones(1, np.float32),), "op 0 with mode 0"),
    (bytes([ADD, ROW, 0]), (np.ones(5, np.float32),), "operand: 5 items, expected 4"),
    (bytes([ADD, FULL, 0]), (np.ones(4, np.float32),), "operand: 4 items, expected 12"),
    (bytes([ADD, ROW, 0, MUL, FULL, 0]), (np.ones(4, np.float32),), "used with two lengths"),
    (bytes([ADD, SCALAR, 0]), (np.ones(1, np.float64),), "operand: wrong item type"),
    (bytes([ADD, SCALAR, 0] * 33), (np.ones(1, np.float32),), "too many steps"),
])
def test_an_elementwise_program_is_checked_before_it_runs(vit, program, operands, match):
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=match):
        vit.elementwise(x, x, 3, 4, program, operands)
    assert not x.any()


@pytest.mark.parametrize("draw", range(4))
def test_a_chain_runs_its_elementwise_nodes_as_one_program(draw):
    """Add / Sub / Mul / Div with the chain's value on either side, a scalar, a row or a whole
    operand, an Erf between them, from the chain's first node on (its input is the value); an
    operand the kernel does not read (a column) ends the run, the nodes after it form another."""
    rng = np.random.default_rng([SEED, 4, draw])
    tokens, dim = int(rng.integers(2, 20)), int(rng.integers(1, 300))
    nodes = [helper.make_node("Sub", ["c", "x"], ["s"], name="c_minus_x"),
             helper.make_node("Div", ["s", "row"], ["d"], name="over_row"),
             helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "three"], ["e3"], name="plus_three"),   # erf + 3 in [2, 4]
             helper.make_node("Div", ["two", "e3"], ["q"], name="two_over"),
             helper.make_node("Mul", ["q", "z"], ["m"], name="times_z"),
             helper.make_node("Add", ["m", "column"], ["a"], name="plus_column"),
             helper.make_node("Sub", ["a", "row"], ["y1"], name="minus_row"),
             helper.make_node("Mul", ["half", "y1"], ["y"], name="half")]
    params = {"c": np.array(0.3, np.float32), "row": normal(rng, dim) + np.float32(4), "two": np.array([2], np.float32),
              "three": np.array(3, np.float32),
              "column": normal(rng, tokens, 1), "half": np.array(0.5, np.float32)}
    model = head_model(nodes, {"x": (1, tokens, dim), "z": (1, tokens, dim)}, params, ["y"])
    head = run_both(model, [{"x": normal(rng, b, tokens, dim), "z": normal(rng, b, tokens, dim)} for b in (1, 3)])
    [chain] = chains(head)
    for plan in chain.shapes.values():
        assert [type(step).__name__ for step, _ in plan] == ["_ElementwiseRun", "_ChainNode", "_ElementwiseRun"]
        assert plan[0][0].source >= 0 and plan[2][0].source == -1


def test_a_chain_composes_its_reshapes_and_transposes_into_one_view():
    """A ViT's head split (Reshape, Transpose, Reshape) after the projection is one strided view
    once the first call has seen that none of them copies; a Transpose + Reshape that must copy
    keeps running node by node; both against onnxruntime, at two batch sizes."""
    rng = np.random.default_rng([SEED, 5])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="proj"),
             helper.make_node("Reshape", ["m", "heads"], ["r"], name="split"),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3], name="heads_first"),
             helper.make_node("Unsqueeze", ["t", "axis0"], ["u"], name="lead"),
             helper.make_node("Mul", ["u", "scale"], ["s"], name="scale"),
             helper.make_node("Transpose", ["s"], ["t2"], perm=[0, 1, 3, 2, 4], name="tokens_first"),
             helper.make_node("Reshape", ["t2", "merge"], ["y"], name="merge")]
    params = {"w": normal(rng, 64, 64) / np.float32(8), "heads": np.array([0, 17, 4, 16], np.int64),
              "axis0": np.array([0], np.int64), "scale": np.array(0.5, np.float32),
              "merge": np.array([-1, 17, 64], np.int64)}
    model = head_model(nodes, {"x": (1, 17, 64)}, params, ["y"])
    head = run_both(model, [{"x": normal(rng, b, 17, 64)} for b in (1, 2)])
    [chain] = chains(head)
    for plan in chain.shapes.values():
        runs = [step for step, _ in plan if type(step).__name__ == "_ViewRun"]
        assert len(runs) == 2
        assert runs[0].strides and runs[1].strides is False   # (N, 4, 17, 16) -> (N, 17, 4, 16) copies


def _view_args(x: np.ndarray, view: np.ndarray) -> tuple:
    """(offset, shape, strides) of ``view`` over ``x`` in elements, as the chain's view run keeps them."""
    offset = (view.__array_interface__["data"][0] - x.__array_interface__["data"][0]) // 4
    return offset, view.shape, tuple(st // 4 for st in view.strides)


@pytest.mark.parametrize("draw", range(6))
def test_view_copy_is_numpys_copy_of_the_view_and_its_scale_bit_for_bit(vit, draw):
    """The head splits of a ViT (select, reshape, transpose) and random transposes of random
    shapes: the copy is numpy's, and times / divided by one float32 it is numpy's float32 op."""
    rng = np.random.default_rng([SEED, 300, draw])
    x = rng.standard_normal((3, 17, 1, 64)).astype(np.float32)
    views = [x[2].reshape(17, 4, 16).transpose(1, 0, 2)[None], x[1].reshape(17, 4, 16).transpose(1, 2, 0)[None],
             x[0, :, 0]]
    shape = tuple(int(d) for d in rng.integers(1, 6, size=int(rng.integers(1, 6))))
    y = rng.standard_normal(shape).astype(np.float32)
    views.append(y.transpose(rng.permutation(len(shape))))
    for view in views:
        base = x if np.shares_memory(view, x) else y
        offset, vshape, strides = _view_args(base, view)
        c = np.float32(rng.uniform(0.1, 2.0))
        for op, expected in [(0, np.ascontiguousarray(view)), (1, view * c), (2, view / c)]:
            out = np.full(vshape, np.nan, np.float32)
            vit.view_copy(base, out, offset, vshape, strides, op, float(c))
            assert np.array_equal(out, expected), (draw, vshape, op)


def test_view_copy_refuses_views_outside_x_and_malformed_arguments(vit):
    x = np.zeros(24, np.float32)
    out = np.empty(12, np.float32)
    with pytest.raises(ValueError, match="outside x"):
        vit.view_copy(x, out, 13, (12,), (1,), 0, 0.0)          # the last element would be x[24]
    with pytest.raises(ValueError, match="outside x"):
        vit.view_copy(x, out, 3, (3, 4), (9, 1), 0, 0.0)        # reaches x[3 + 2 * 9 + 3] = x[24]
    vit.view_copy(x, out, 2, (3, 4), (9, 1), 0, 0.0)            # reaches x[23]: inside
    with pytest.raises(ValueError, match=">= 0"):
        vit.view_copy(x, out, 0, (3, 4), (-6, 1), 0, 0.0)
    with pytest.raises(ValueError, match="rank 1-8"):
        vit.view_copy(x, out, -1, (12,), (1,), 0, 0.0)
    with pytest.raises(ValueError, match="rank 1-8"):
        vit.view_copy(x, out, 0, (12,), (1, 1), 0, 0.0)
    with pytest.raises(ValueError, match="rank 1-8"):
        vit.view_copy(x, out, 0, (12,), (1,), 3, 0.0)
    with pytest.raises(ValueError, match="out"):
        vit.view_copy(x, np.empty(11, np.float32), 0, (12,), (1,), 0, 0.0)
    with pytest.raises(ValueError, match="overlaps"):
        vit.view_copy(x, x[12:], 0, (12,), (1,), 0, 0.0)
    with pytest.raises(ValueError, match="overflows"):
        vit.view_copy(x, np.empty(4, np.float32), 0, (2, 2), (2**61, 1), 0, 0.0)
    with pytest.raises(ValueError):
        vit.view_copy(x.astype(np.float64), out, 0, (12,), (1,), 0, 0.0)
