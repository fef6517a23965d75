"""The plan compiler's chains (enclave/interpreter.py, ``_Chain``): heads of the patterns real
exports write (GELU, MatMul + bias, attention, head split and merge) against onnxruntime on
random shapes, which nodes are fused and which must not be, and the fast path's proof.

Random draws come from ``SEED`` and the draw number (both in the test id and printed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper

from enclave import interpreter
from enclave.interpreter import HeadInterpreter
from splitseal.errors import ModelError
from tests.support.head_graphs import chains, head_model, normal, run_both
from tests.unit.test_interpreter import package_whole

SEED = 20261202
DRAWS = 4


def _gelu_mlp(rng):
    """MatMul + bias, torch's exact GELU (Div, Erf, Add, Mul, Mul), MatMul + bias, residual."""
    tokens, dim, hidden = (int(v) for v in rng.integers(1, 20, size=3))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["mm1"], name="fc1"),
        helper.make_node("Add", ["mm1", "b1"], ["h"], name="fc1_bias"),
        helper.make_node("Div", ["h", "sqrt2"], ["hd"], name="gelu_div"),
        helper.make_node("Erf", ["hd"], ["he"], name="gelu_erf"),
        helper.make_node("Add", ["he", "one"], ["ha"], name="gelu_add"),
        helper.make_node("Mul", ["half", "ha"], ["hm"], name="gelu_half"),
        helper.make_node("Mul", ["h", "hm"], ["g"], name="gelu_mul"),
        helper.make_node("MatMul", ["g", "w2"], ["mm2"], name="fc2"),
        helper.make_node("Add", ["mm2", "b2"], ["o"], name="fc2_bias"),
        helper.make_node("Add", ["x", "o"], ["y"], name="residual"),
    ]
    # weights scaled as trained layers are (outputs of order 1: the tolerance is onnxruntime's)
    params = {"w1": normal(rng, dim, hidden) / np.float32(math.sqrt(dim)), "b1": normal(rng, hidden),
              "w2": normal(rng, hidden, dim) / np.float32(math.sqrt(hidden)), "b2": normal(rng, dim),
              "sqrt2": np.array(math.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32),
              "half": np.array(0.5, np.float32)}
    return head_model(nodes, {"x": (1, tokens, dim)}, params, ["y"]), (tokens, dim)


def _attention(rng, scale: str = "split"):
    """LayerNorm, the QKV projection split into heads (Reshape, Transpose, Gather), scaled
    dot-product attention (Mul by the scale, MatMul, Softmax, MatMul) and the heads merged
    (Transpose, Reshape, MatMul + bias), as torch's exporters write it (``scale`` "split": Q and
    K^T each multiplied by d^-1/4); "div" / "mul": the scores divided by sqrt(d) or multiplied
    by 1/sqrt(d) instead, as older exports write it; "none": no scale."""
    heads, head_dim = int(rng.integers(1, 5)), int(rng.integers(1, 9))
    tokens, dim = int(rng.integers(1, 20)), heads * head_dim
    c64 = lambda v: np.array(v, np.int64)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln_s", "ln_b"], ["ln"], axis=-1, epsilon=1e-6, name="ln"),
        helper.make_node("MatMul", ["ln", "w_qkv"], ["qkv0"], name="qkv"),
        helper.make_node("Add", ["qkv0", "b_qkv"], ["qkv1"], name="qkv_bias"),
        helper.make_node("Reshape", ["qkv1", "split_shape"], ["qkv2"], name="split"),   # N, T, 3, H, D
        helper.make_node("Transpose", ["qkv2"], ["qkv3"], perm=[2, 0, 3, 1, 4], name="to_heads"),   # 3, N, H, T, D
        helper.make_node("Gather", ["qkv3", "i0"], ["q"], axis=0, name="q"),
        helper.make_node("Gather", ["qkv3", "i1"], ["k"], axis=0, name="k"),
        helper.make_node("Gather", ["qkv3", "i2"], ["v"], axis=0, name="v"),
        *([helper.make_node("Mul", ["q", "scale"], ["qs"], name="q_scale")] if scale == "split" else []),
        helper.make_node("Transpose", ["k"], ["kt" if scale == "split" else "ks"], perm=[0, 1, 3, 2], name="k_t"),
        *([helper.make_node("Mul", ["kt", "scale"], ["ks"], name="k_scale")] if scale == "split" else []),
        helper.make_node("MatMul", ["qs" if scale == "split" else "q", "ks"],
                         ["att" if scale in ("split", "none") else "att0"], name="scores"),
        *([helper.make_node("Div" if scale == "div" else "Mul", ["att0", "scale"], ["att"], name="scores_scale")]
          if scale in ("div", "mul") else []),
        helper.make_node("Softmax", ["att"], ["p"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["p", "v"], ["ctx"], name="weighted"),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3], name="merge_t"),
        helper.make_node("Reshape", ["ctx_t", "merge_shape"], ["merged"], name="merge"),
        helper.make_node("MatMul", ["merged", "w_o"], ["o0"], name="out_proj"),
        helper.make_node("Add", ["o0", "b_o"], ["y"], name="out_bias"),
    ]
    scaled = np.float32(1 / math.sqrt(dim))   # as trained layers are: outputs of order 1
    params = {"ln_s": normal(rng, dim), "ln_b": normal(rng, dim), "w_qkv": normal(rng, dim, 3 * dim) * scaled,
              "b_qkv": normal(rng, 3 * dim),
              "split_shape": c64([0, 0, 3, heads, head_dim]), "i0": c64(0), "i1": c64(1), "i2": c64(2),
              "scale": np.array({"split": head_dim ** -0.25, "div": head_dim ** 0.5, "mul": head_dim ** -0.5,
                                 "none": 1.0}[scale], np.float32), "merge_shape": c64([0, 0, dim]),
              "w_o": normal(rng, dim, dim) * scaled, "b_o": normal(rng, dim)}
    return head_model(nodes, {"x": (1, tokens, dim)}, params, ["y"]), (tokens, dim)


PATTERNS = {"gelu_mlp": _gelu_mlp, "attention": _attention,
            **{f"attention_{scale}": (lambda rng, scale=scale: _attention(rng, scale)) for scale in ("div", "mul", "none")}}
CASES = [(p, k) for p in PATTERNS for k in range(DRAWS)]


@pytest.mark.parametrize("pattern, k", CASES, ids=[f"{p}-draw{k}-seed{SEED}" for p, k in CASES])
def test_fused_patterns_match_onnxruntime(pattern, k):
    rng = np.random.default_rng([SEED, list(PATTERNS).index(pattern), k])
    model, (tokens, dim) = PATTERNS[pattern](rng)
    batches = [1, int(rng.integers(2, 5))]
    print(f"seed={SEED} pattern={pattern} draw={k} tokens={tokens} dim={dim} batches={batches}")
    head = run_both(model, [{"x": normal(rng, b, tokens, dim) * 2} for b in batches])
    fused = chains(head)
    assert fused, "the pattern was not fused"
    for chain in fused:   # each batch size proved the fast path (none fell back to the nodes)
        assert len(chain.shapes) == len(batches) and all(chain.shapes.values())


def test_gelu_mlp_chains_stop_at_a_tensor_read_twice():
    """``h`` (the first bias add) is read by the GELU's Div and by its last Mul: the chain that
    makes it ends there, the GELU starts a second one, which takes ``h`` as an input."""
    model, (tokens, dim) = _gelu_mlp(np.random.default_rng([SEED, 99]))
    head = run_both(model, [{"x": normal(np.random.default_rng(5), 2, tokens, dim)}])
    names = [c.names for c in chains(head)]
    assert names == [["fc1", "fc1_bias"],
                      ["gelu_div", "gelu_erf", "gelu_add", "gelu_half", "gelu_mul", "fc2", "fc2_bias", "residual"]]


def test_attention_chains_follow_single_reads():
    model, (tokens, dim) = _attention(np.random.default_rng([SEED, 98]))
    head = run_both(model, [{"x": normal(np.random.default_rng(6), 3, tokens, dim)}])
    names = [c.names for c in chains(head)]
    # qkv3 is read by three Gathers: the projection chain ends there; q's chain runs through
    # the scores, the softmax, the weighted sum and the merge to the output
    assert ["ln", "qkv", "qkv_bias", "split", "to_heads"] in names
    assert ["k", "k_t", "k_scale"] in names
    assert ["q", "q_scale", "scores", "softmax", "weighted", "merge_t", "merge", "out_proj", "out_bias"] in names
    assert sum(len(c) for c in names) == len(model.graph.node) - 1   # v alone: one node, no chain


def _product_runs(head: HeadInterpreter) -> list[list[str]]:
    """The node names of every product run in the heads' proven fast paths."""
    return [[n.step.node.name for n in step.nodes] for chain in chains(head) for plan in chain.shapes.values()
            for step, _ in plan if isinstance(step, interpreter._ProductRun)]


def test_products_and_their_bias_rows_are_one_kernel_call():
    """A MatMul by a weight and the Add of its bias row are one call of the packed kernel (the bias
    in its store), the attention's per-head products one batched call each; proven equal to the
    nodes' own run and onnxruntime's within tolerance."""
    model, (tokens, dim) = _gelu_mlp(np.random.default_rng([SEED, 90]))
    head = run_both(model, [{"x": normal(np.random.default_rng(3), 2, tokens, dim)}])
    assert _product_runs(head) == [["fc1", "fc1_bias"], ["fc2", "fc2_bias", "residual"]]
    model, (tokens, dim) = _attention(np.random.default_rng([SEED, 89]))
    head = run_both(model, [{"x": normal(np.random.default_rng(4), 2, tokens, dim)}])
    assert _product_runs(head) == [["qkv", "qkv_bias"], ["out_proj", "out_bias"]]   # the rest: attention's run


def _attention_runs(head: HeadInterpreter) -> list[interpreter._AttentionRun]:
    return [step for chain in chains(head) for plan in chain.shapes.values() if plan
            for step, _ in plan if isinstance(step, interpreter._AttentionRun)]


@pytest.mark.parametrize("scale, nodes, scale_at", [
    ("split", ["q_scale", "scores", "softmax", "weighted"], 1),
    ("div", ["scores", "scores_scale", "softmax", "weighted"], 2),
    ("mul", ["scores", "scores_scale", "softmax", "weighted"], 2),
    ("none", ["scores", "softmax", "weighted"], 0)])
def test_scaled_dot_product_attention_is_one_kernel_call(scale, nodes, scale_at):
    """The scale (on Q or on the scores, a Mul or a Div, or none), the product by K^T, the Softmax
    and the product by V are one call of gemm.c's attention, proven equal to the nodes' own run
    bit for bit (and to onnxruntime within tolerance) for every batch size."""
    model, (tokens, dim) = _attention(np.random.default_rng([SEED, 86, len(scale)]), scale)
    rng = np.random.default_rng(11)
    head = run_both(model, [{"x": normal(rng, b, tokens, dim)} for b in (1, 3)])
    runs = _attention_runs(head)
    assert len(runs) == 2   # one per batch size
    for run in runs:
        assert [n.step.node.name for n in run.nodes] == nodes
        assert run.scale_at == scale_at and run.divide == (scale == "div")


def test_attention_given_other_operands_gets_the_nodes():
    """Operands of other shapes than on the reference run (here K^T and V of one key fewer) go
    through the nodes' own code; those of its shapes through the kernel; both as numpy computes."""
    model, (tokens, dim) = _attention(np.random.default_rng([SEED, 85]))
    rng = np.random.default_rng(12)
    assert tokens > 1   # (this draw: one key can be dropped)
    head = run_both(model, [{"x": normal(rng, 2, tokens, dim)}])
    chain = next(c for c in chains(head) if "softmax" in c.names)
    run = next(step for plan in chain.shapes.values() for step, _ in plan if isinstance(step, interpreter._AttentionRun))
    q_shape, kt_shape, v_shape, out_shape = run.shapes
    q, kt, v = normal(rng, *q_shape), normal(rng, *kt_shape), normal(rng, *v_shape)
    inputs = [None] * len(chain.input_slots)
    inputs[run.scale] = np.array(0.5, np.float32)

    def expected(kt, v):
        scores = (q * np.float32(0.5)).astype(np.float64) @ kt
        e = np.exp(scores - scores.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)) @ v

    for kt_, v_ in ((kt, v), (np.ascontiguousarray(kt[..., :-1]), np.ascontiguousarray(v[..., :-1, :]))):
        inputs[run.kt], inputs[run.v] = kt_, v_
        y = run.apply(q, tuple(inputs))
        assert y.shape == out_shape and y.dtype == np.float32
        np.testing.assert_allclose(y, expected(kt_, v_), rtol=1e-5, atol=1e-6)


def test_an_attention_run_that_differs_is_not_used(monkeypatch):
    """A fused attention whose bits differ from the nodes' (injected: one part in 10^6 off) is
    never used; the chain runs the nodes for that shape and the results stay onnxruntime's."""
    gemm = interpreter.native.load("gemm")
    real = gemm.attention

    def off(*args):
        real(*args)
        args[3][...] *= np.float32(1.000001)

    monkeypatch.setattr(gemm, "attention", off)
    model, (tokens, dim) = _attention(np.random.default_rng([SEED, 84]))
    head = run_both(model, [{"x": normal(np.random.default_rng(13), 2, tokens, dim)}])
    attention = [c for c in chains(head) if "softmax" in c.names]
    assert len(attention) == 1 and list(attention[0].shapes.values()) == [None]


@pytest.mark.parametrize("perm, fused", [((1, 0, 2), True), ((0, 2, 1), False)])
def test_a_residual_add_is_in_the_products_store_across_order_keeping_views(perm, fused):
    """A residual Add of a whole tensor after a product and its bias is a second addition in the
    kernel's store, across a Reshape and a Transpose that moves only an axis of size 1 (the
    attention's merge, (17, 64) -> (17, 1, 64) -> (1, 17, 64)); a Transpose that reorders the
    elements keeps the Add a node. Both proven, both onnxruntime's within tolerance."""
    rng = np.random.default_rng([SEED, 83, *perm])
    batch, inner, dim = 5, 12, 30
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w", "c"], ["g"], transB=1, name="fc"),
             helper.make_node("Reshape", ["g", "shape"], ["g3"], name="split"),
             helper.make_node("Transpose", ["g3"], ["gt"], perm=list(perm), name="swap"),
             helper.make_node("Add", ["gt", "skip"], ["y"], name="residual")]
    three = (batch, 1, dim) if fused else (batch, 5, dim // 5)
    params = {"w": normal(rng, dim, inner), "c": normal(rng, dim), "shape": np.array(three, np.int64),
              "skip": normal(rng, *(three[p] for p in perm))}   # (a parameter: the batch axis moves)
    model = head_model(nodes, {"x": (batch, inner)}, params, ["y"])
    head = run_both(model, [{"x": normal(rng, batch, inner)}])
    assert _product_runs(head) == ([["fc", "split", "swap", "residual"]] if fused else [["fc"]])


def test_a_select_of_one_head_and_its_transpose_are_one_view():
    """Attention's K select (a Gather of index 1) and its Transpose are one strided view of the
    projection's output, at the select's offset, copied contiguous in one call with the Mul by the
    scale that follows them (view_copy) once proven; a second batch size gets its own."""
    model, (tokens, dim) = _attention(np.random.default_rng([SEED, 87]))
    rng = np.random.default_rng(9)
    head = run_both(model, [{"x": normal(rng, b, tokens, dim)} for b in (2, 3, 2)])
    k_chain = next(c for c in chains(head) if c.names == ["k", "k_t", "k_scale"])
    assert len(k_chain.shapes) == 2
    for plan in k_chain.shapes.values():
        views = plan[0][0]
        assert isinstance(views, interpreter._ViewRun)
        assert [kind for kind, _ in views.ops] == [interpreter._GATHER, interpreter._TRANSPOSE]
        shape, strides, offset, offset_items, item_strides = views.strides
        assert offset == math.prod(views.in_shape[1:]) * 4   # K: the second of Q, K, V along the first axis
        assert offset_items * 4 == offset and tuple(st * 4 for st in item_strides) == strides
        assert views.scale is not None and views.scale.step.node.name == "k_scale" and len(plan) == 1


def test_a_gemm_and_its_bias_are_one_kernel_call_and_other_operands_get_the_nodes():
    """A Gemm (transB, as torch writes a Linear) with its C row is one packed call; given a weight
    other than the one packed on the reference run, the run goes through the nodes' own code and
    its result is unchanged."""
    rng = np.random.default_rng([SEED, 88])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w", "c"], ["g"], transB=1, name="fc"),
             helper.make_node("Add", ["g", "b"], ["y"], name="shift")]
    params = {"w": normal(rng, 30, 20), "c": normal(rng, 30), "b": normal(rng, 30)}
    model = head_model(nodes, {"x": (1, 20)}, params, ["y"])
    feed = {"x": normal(rng, 7, 20)}
    head = run_both(model, [feed])
    assert _product_runs(head) == [["fc"]]   # the Gemm's C is its bias: the Add stays a node
    expected = head.run(feed)["y"]
    run = next(step for chain in chains(head) for plan in chain.shapes.values() for step, _ in plan
               if isinstance(step, interpreter._ProductRun))
    run.weight = run.weight.copy()   # not the array the head passes: the nodes' path
    assert np.array_equal(head.run(feed)["y"], expected)


def test_no_chain_through_a_head_output_or_a_tensor_read_elsewhere():
    """An intermediate that is a head output, or read by a second node, must stay a plain value:
    the chain ends at it (a later in-place step would overwrite it)."""
    rng = np.random.default_rng([SEED, 97])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "b"], ["a"], name="bias"),          # a: a head output
        helper.make_node("Mul", ["a", "k"], ["s"], name="scale"),
        helper.make_node("Erf", ["s"], ["e"], name="erf"),                # e: read by two nodes
        helper.make_node("Add", ["e", "k"], ["f"], name="shift"),
        helper.make_node("Mul", ["f", "e"], ["y"], name="mix"),
    ]
    params = {"w": normal(rng, 6, 5), "b": normal(rng, 5), "k": np.array(0.7, np.float32)}
    model = head_model(nodes, {"x": (1, 6)}, params, ["a", "y"])
    head = run_both(model, [{"x": normal(rng, 4, 6)}, {"x": normal(rng, 1, 6)}])
    assert [c.names for c in chains(head)] == [["mm", "bias"], ["scale", "erf"], ["shift", "mix"]]


def test_a_fast_path_that_differs_is_not_used(monkeypatch):
    """The first call per input shape compares the fast path with the nodes' own code bit for
    bit: a fast path that computes something else (here the GELU's element-wise run, Div to Mul,
    off by one part in 10^4, injected) is never used for that shape, and the results stay
    onnxruntime's."""
    real = interpreter._elementwise_run

    def off_run(run, value, inputs, owned):
        y = real(run, value, inputs, owned)
        y *= np.float32(1.0001)
        return y

    monkeypatch.setattr(interpreter, "_elementwise_run", off_run)   # the chain's run; the nodes keep their own
    model, (tokens, dim) = _gelu_mlp(np.random.default_rng([SEED, 96]))
    head = run_both(model, [{"x": normal(np.random.default_rng(7), 2, tokens, dim)}])
    gelu = [c for c in chains(head) if "gelu_erf" in c.names]
    assert len(gelu) == 1 and list(gelu[0].shapes.values()) == [None]


def test_a_failure_inside_a_chain_names_its_node():
    """A node inside a chain still fails closed with its own name: a Reshape whose target does
    not fit the batch, and an intermediate whose declared shape is wrong."""
    rng = np.random.default_rng([SEED, 95])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Reshape", ["m", "shape"], ["r"], name="to_pairs"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    params = {"w": normal(rng, 4, 3), "shape": np.array([-1, 2], np.int64)}
    model = head_model(nodes, {"x": (1, 4)}, params, ["y"])
    head = run_both(model, [{"x": normal(rng, 2, 4)}])        # 2 x 3 -> 3 x 2
    with pytest.raises(ModelError, match="'to_pairs' .*cannot reshape"):
        head.run({"x": normal(rng, 1, 4)})                       # 1 x 3 does not split in pairs
    # the graph declares m as [N, 5]; it is [N, 3]: refused on the first call of every shape
    model.graph.value_info.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", 5]))
    for vi in list(model.graph.value_info):
        if vi.name == "m" and vi.type.tensor_type.shape.dim[1].dim_value == 3:
            model.graph.value_info.remove(vi)
    pkg, index, _, _ = package_whole(model)
    bad = HeadInterpreter(pkg, index)
    assert chains(bad)
    with pytest.raises(ModelError, match="'mm' .*declares"):
        bad.run({"x": normal(rng, 2, 4)})


def test_chains_keep_the_batch_size_per_shape():
    """More batch sizes than a chain keeps proofs for, in turn: each matches onnxruntime."""
    model, (tokens, dim) = _attention(np.random.default_rng([SEED, 94]))
    rng = np.random.default_rng(8)
    batches = [1, 3] + list(range(1, interpreter._MEMO_LIMIT + 4)) + [2]
    run_both(model, [{"x": normal(rng, b, tokens, dim)} for b in batches])


def test_computed_batchnorm_parameters_are_not_taken_for_cached_ones():
    """BatchNormalization folds its parameters once while they are the same arrays; a scale
    computed on every call (here by Abs: a chain whose operand is BatchNormalization's second
    input) is folded anew each time, and each batch matches onnxruntime."""
    rng = np.random.default_rng([SEED, 93])
    nodes = [helper.make_node("Mul", ["x", "k"], ["s"], name="scale_from_x"),
             helper.make_node("ReduceMean", ["s"], ["s1"], axes=[0], keepdims=0, name="per_channel"),
             helper.make_node("Abs", ["s1"], ["s2"], name="positive"),
             helper.make_node("BatchNormalization", ["x", "s2", "b", "m", "v"], ["y"], epsilon=1e-3, name="bn")]
    params = {"k": np.array(0.5, np.float32), "b": normal(rng, 6), "m": normal(rng, 6),
              "v": (rng.random(6) + 0.1).astype(np.float32)}
    model = head_model(nodes, {"x": (1, 6)}, params, ["y"], opset=13)
    head = run_both(model, [{"x": normal(rng, b, 6)} for b in (3, 3, 2, 5)])
    assert [c.names for c in chains(head)] == [["scale_from_x", "per_channel", "positive", "bn"]]


def _layernorm_runs(head: HeadInterpreter) -> list[interpreter._LayerNormRun]:
    return [step for chain in chains(head) for plan in chain.shapes.values() if plan
            for step, _ in plan if isinstance(step, interpreter._LayerNormRun)]


@pytest.mark.parametrize("k", range(DRAWS))
def test_layernorms_by_parameters_are_one_kernel_call_first_or_in_place(k):
    """A LayerNormalization at a chain's start (reading the entry's input, which it must not
    write) and one after a product (into the chain's own array) are each one kernel call by
    the Scale and B the reference run flattened, equal to onnxruntime; a Scale computed in the
    graph is not taken for a parameter."""
    rng = np.random.default_rng([SEED, 77, k])
    tokens, dim, hidden = (int(v) for v in rng.integers(1, 20, size=3))
    nodes = [helper.make_node("LayerNormalization", ["x", "s1", "b1"], ["n1"], axis=-1, epsilon=1e-5, name="ln1"),
             helper.make_node("MatMul", ["n1", "w"], ["h"], name="fc"),
             helper.make_node("LayerNormalization", ["h", "s2"], ["n2"], axis=-1, epsilon=1e-6, name="ln2"),
             helper.make_node("Add", ["s1", "zero"], ["s3"], name="computed_scale"),
             helper.make_node("LayerNormalization", ["x", "s3", "b1"], ["n3"], axis=-1, name="ln3"),
             helper.make_node("Relu", ["n3"], ["r3"], name="relu3")]
    params = {"s1": normal(rng, dim), "b1": normal(rng, dim), "w": normal(rng, dim, hidden),
              "s2": normal(rng, hidden), "zero": np.zeros(dim, np.float32)}
    model = head_model(nodes, {"x": (1, tokens, dim)}, params, ["n2", "r3"])
    head = run_both(model, [{"x": normal(rng, b, tokens, dim) * 3} for b in (1, 2)])
    runs = _layernorm_runs(head)
    assert sorted({r.step.node.name for r in runs}) == ["ln1", "ln2"]   # ln3's Scale is computed
    assert len(runs) == 4   # two per batch size
    ln1 = next(r for r in runs if r.step.node.name == "ln1" and r.shape[0] == 1)
    x = normal(rng, 1, tokens, dim)
    inputs = [None] * 8
    inputs[ln1.source], inputs[ln1.node.sources[1]], inputs[ln1.node.sources[2]] = x, ln1.scale, ln1.bias
    kept = x.copy()
    y = ln1.apply(None, tuple(inputs), owned=False)
    np.testing.assert_array_equal(x, kept)   # an entry input is never written
    # another shape, or another Scale array with the same values: the node's own code, the same result
    wide = np.concatenate([x, x])
    inputs[ln1.source] = wide
    np.testing.assert_array_equal(ln1.apply(None, tuple(inputs), owned=False), np.concatenate([y, y]))
    inputs[ln1.source], inputs[ln1.node.sources[1]] = x, ln1.scale.copy()
    np.testing.assert_array_equal(ln1.apply(None, tuple(inputs), owned=False), y)
