"""A conv's bias, activation and normalisation written into its output (enclave/interpreter.py):
PRelu's two-pass form and the np.where form it falls back to, BatchNormalization as one multiply
and one add, Relu / BatchNormalization in place in a chain after a Conv (SFace's and ArcFace's
blocks), a pointwise conv over a channels-last input giving NCHW itself, and Softmax over long
rows (PP-OCRv4's classifier), each against onnxruntime on random shapes, with the cases where a
fused form must not apply. Weights are seeded (``SEED`` and the draw, both in the test id)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from enclave import interpreter
from enclave.interpreter import _BATCHNORM, _RELU, HeadInterpreter
from tests.support.head_graphs import chains, head_model, normal, run_both, scaled_weight
from tests.unit.test_interpreter import package_whole

SEED = 20261202


def _bn_params(rng, c: int, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}_s": normal(rng, c), f"{prefix}_b": normal(rng, c), f"{prefix}_m": normal(rng, c),
            f"{prefix}_v": (rng.random(c) + 0.05).astype(np.float32)}


def _proven(head: HeadInterpreter) -> None:
    """Every chain's fast path was proven equal to its nodes' own run (never left to the reference)."""
    for chain in chains(head):
        assert chain.shapes and all(v is not None for v in chain.shapes.values()), chain.names


@pytest.mark.parametrize("draw", range(6))
def test_prelu_matches_onnxruntime_with_and_without_the_two_pass_form(draw):
    """Slopes in [-1, 1] without zeros take max(s x, x); a slope above 1 or a zero slope falls back
    to np.where. Both against onnxruntime, per channel and one shared slope, ranks 2 to 4."""
    rng = np.random.default_rng([SEED, draw])
    rank = 2 + draw % 3
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 40)), *rng.integers(1, 9, size=rank - 2).tolist())
    c = shape[1]
    bounded = draw % 2 == 0
    slope = rng.uniform(-1, 1, size=(c, *([1] * (rank - 2)))).astype(np.float32)
    slope[slope == 0] = 0.5
    if not bounded:
        slope.flat[int(rng.integers(0, slope.size))] = 1.5 if draw % 4 == 1 else 0.0
    if draw >= 4:
        slope = slope.reshape(-1)[:1].copy()   # one slope for every element
    model = head_model([helper.make_node("PRelu", ["x", "s"], ["y"], name="prelu")], {"x": shape}, {"s": slope}, ["y"], 16)
    head = run_both(model, [{"x": normal(rng, *shape) * 3}])
    step = head._plan[0]
    assert step.ctx.memo["slope"][1] is (bounded and draw < 4 or draw >= 4 and bool(slope[0] <= 1 and slope[0] != 0))


def test_prelu_of_infinities_as_onnxruntime():
    """Intermediates may overflow (head inputs are finite): with a zero slope, +inf stays +inf and
    -inf becomes NaN (inf * 0), which is why the two-pass form needs slopes other than 0."""
    big = np.array(3e38, np.float32)
    for slope in (np.array([0.0, 0.25, -0.5, 1.0], np.float32), np.array([0.1, 0.25, -0.5, 1.0], np.float32)):
        nodes = [helper.make_node("Mul", ["x", "big"], ["h"], name="overflow"),
                 helper.make_node("PRelu", ["h", "s"], ["y"], name="prelu")]
        model = head_model(nodes, {"x": (1, 4)}, {"big": big, "s": slope}, ["y"], 16)
        x = np.array([[2.0, -2.0, 3.0, -1e-30], [-4.0, 5.0, -6.0, 7.0]], np.float32)
        run_both(model, [{"x": x}])


def _conv_block(rng, n: int, c: int, m: int, size: int, downsample: bool):
    """ArcFace's / SFace's blocks: Conv + BN + PRelu, Conv + BN, a residual Add (a 1x1 strided
    conv on the skip path when ``downsample``), BN, Relu."""
    stride = 2 if downsample else 1
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["n1"], epsilon=1e-5,
                         name="bn1"),
        helper.make_node("PRelu", ["n1", "slope"], ["p1"], name="prelu"),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[stride, stride], name="conv2"),
        helper.make_node("BatchNormalization", ["c2", "bn2_s", "bn2_b", "bn2_m", "bn2_v"], ["n2"], name="bn2"),
    ]
    params = {"w1": scaled_weight(rng, m, c, 3, 3), "b1": normal(rng, m), "w2": scaled_weight(rng, m, m, 3, 3),
              "slope": rng.uniform(0.05, 0.5, size=(m, 1, 1)).astype(np.float32),
              **_bn_params(rng, m, "bn1"), **_bn_params(rng, m, "bn2"), **_bn_params(rng, m, "bn3")}
    if downsample:
        nodes.append(helper.make_node("Conv", ["x", "wd"], ["skip"], strides=[2, 2], name="downsample"))
        params["wd"] = scaled_weight(rng, m, c, 1, 1)
        skip = "skip"
    else:
        skip = "x"
    nodes += [helper.make_node("Add", ["n2", skip], ["r"], name="residual"),
              helper.make_node("BatchNormalization", ["r", "bn3_s", "bn3_b", "bn3_m", "bn3_v"], ["n3"], name="bn3"),
              helper.make_node("Relu", ["n3"], ["y"], name="relu")]
    return head_model(nodes, {"x": (n, c, size, size)}, params, ["y"], 15)


@pytest.mark.parametrize("draw", range(4))
def test_conv_blocks_with_bn_prelu_residual_and_relu_in_place(draw):
    rng = np.random.default_rng([SEED, 10 + draw])
    downsample = draw % 2 == 1
    c = int(rng.integers(2, 24))
    m = c if not downsample else int(rng.integers(2, 24))
    size = int(rng.integers(4, 15))
    model = _conv_block(rng, 1, c, m, size, downsample)
    head = run_both(model, [{"x": normal(rng, b, c, size, size)} for b in (1, 1, 3, 1)], atol=5e-5)
    _proven(head)
    kinds = {n.step.node.name: n.kind for chain in chains(head) for n in chain.nodes}
    assert kinds["bn1"] == kinds["bn2"] == kinds["bn3"] == _BATCHNORM and kinds["relu"] == _RELU


def test_relu_and_batchnorm_of_a_tensor_read_twice_are_not_in_place():
    """A conv output that is also a head output, and one read by a second node, end their chain:
    the Relu / BatchNormalization after them must not write into them (each output as onnxruntime's)."""
    rng = np.random.default_rng([SEED, 20])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu_of_output"),
             helper.make_node("Conv", ["x", "w2"], ["d"], name="pointwise"),
             helper.make_node("BatchNormalization", ["d", "bn_s", "bn_b", "bn_m", "bn_v"], ["e"], name="bn_of_shared"),
             helper.make_node("Add", ["e", "d"], ["z"], name="reads_d_again")]
    params = {"w": scaled_weight(rng, 8, 5, 3, 3), "b": normal(rng, 8), "w2": scaled_weight(rng, 8, 5, 1, 1), **_bn_params(rng, 8, "bn")}
    model = head_model(nodes, {"x": (1, 5, 6, 6)}, params, ["c", "y", "z"], 15)
    head = run_both(model, [{"x": normal(rng, b, 5, 6, 6)} for b in (1, 2)])
    in_chains = {name for chain in chains(head) for name in chain.names}
    assert not in_chains & {"conv", "relu_of_output", "pointwise"}
    # the BatchNormalization heads its own chain: its operand is the entry's input, not the chain's
    assert [c.names for c in chains(head)] == [["bn_of_shared", "reads_d_again"]]


def test_batchnorm_after_a_conv_with_computed_parameters_folds_them_anew():
    """A BatchNormalization in a Conv's chain whose scale is computed from the input on every call
    (not a parameter): folded again on every call, each batch as onnxruntime's."""
    rng = np.random.default_rng([SEED, 21])
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[0, 2, 3], keepdims=0, name="per_channel"),
             helper.make_node("Abs", ["mu"], ["scale"], name="positive"),
             helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "bn_b", "bn_m", "bn_v"], ["y"], name="bn")]
    params = {"w": scaled_weight(rng, 6, 6, 1, 1), **{k: v for k, v in _bn_params(rng, 6, "bn").items() if k != "bn_s"}}
    model = head_model(nodes, {"x": (1, 6, 5, 5)}, params, ["y"], 13)
    head = run_both(model, [{"x": normal(rng, b, 6, 5, 5)} for b in (2, 2, 1, 3)])
    assert ["conv", "bn"] in [c.names for c in chains(head)]
    _proven(head)


@pytest.mark.parametrize("c,m,size", [(64, 96, 7), (32, 16, 5), (8, 24, 9)])
def test_pointwise_conv_over_a_channels_last_input_gives_nchw(c, m, size):
    """A 3x3 conv's output (channels-last memory) into a 1x1 conv with more than 16 positions at
    batch 1: the product W @ columns^T is NCHW itself (then Flatten without a copy); where gemm.c
    has AVX-512 tiles a product they take runs there instead (channels-last out, as any packed
    conv's)."""
    rng = np.random.default_rng([SEED, c, m, size])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv3x3"),
             helper.make_node("PRelu", ["c1", "slope"], ["p"], name="prelu"),
             helper.make_node("Conv", ["p", "w2", "b2"], ["c2"], name="pointwise"),
             helper.make_node("Flatten", ["c2"], ["y"], name="flatten")]
    params = {"w1": scaled_weight(rng, c, c, 3, 3), "slope": rng.uniform(0.1, 0.9, (c, 1, 1)).astype(np.float32),
              "w2": scaled_weight(rng, m, c, 1, 1), "b2": normal(rng, m)}
    model = head_model(nodes, {"x": (1, c, size, size)}, params, ["y"], 16)
    head = run_both(model, [{"x": normal(rng, b, c, size, size)} for b in (1, 2, 1)])
    pkg, index, _, _ = package_whole(model)
    plain = HeadInterpreter(pkg, index)
    x = normal(rng, 1, c, size, size)
    c1 = plain._plan[0].impl(plain._plan[0].ctx, x, params["w1"])
    p = plain._plan[1].impl(plain._plan[1].ctx, c1, params["slope"])
    assert not p.flags.c_contiguous and p.transpose(0, 2, 3, 1).flags.c_contiguous
    c2 = plain._plan[2].impl(plain._plan[2].ctx, p, params["w2"], params["b2"])
    plan = plain._plan[2].ctx.memo[("conv", p.shape, params["w2"].shape, params["b2"].shape)]
    assert plan.product == ("packed" if interpreter._packed_conv(size * size, c, m) else "columns")
    assert (c2.transpose(0, 2, 3, 1) if plan.product == "packed" else c2).flags.c_contiguous
    _proven(head)


@pytest.mark.parametrize("rows,classes,opset", [(40, 6625, 13), (3, 1024, 17), (5, 1500, 11), (7, 1023, 13)])
def test_softmax_over_long_rows_matches_onnxruntime(rows, classes, opset):
    """PP-OCRv4's classifier: MatMul + bias + Softmax over 6,625 classes (the C kernel's lanes over
    long rows, a row length that is not a multiple of them); opset 11 coerces to 2-D."""
    rng = np.random.default_rng([SEED, rows, classes])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="fc"),
             helper.make_node("Add", ["mm", "b"], ["logits"], name="bias"),
             helper.make_node("Softmax", ["logits"], ["y"], axis=2 if opset < 13 else -1, name="softmax")]
    params = {"w": scaled_weight(rng, 120, classes) * 8, "b": normal(rng, classes)}
    model = head_model(nodes, {"x": (1, rows, 120)}, params, ["y"], opset)
    head = run_both(model, [{"x": normal(rng, b, rows, 120)} for b in (1, 2)], atol=1e-6)
    _proven(head)


@pytest.mark.parametrize("k,n,alpha,beta,trans_a", [(512, 100, 1.0, 1.0, 0), (6272, 128, 1.0, 1.0, 0),
                                                   (37, 5, 0.5, 2.0, 0), (9, 7, 1.0, 0.25, 1)])
def test_gemm_of_one_row_by_a_stored_weight_matches_onnxruntime(k, n, alpha, beta, trans_a):
    """Gemm with transB=1 (every torch export's Linear) by a weight of at most
    _packed_max_weights() (more with AVX-512 tiles) is the packed kernel at more rows (at one row too if K is small); by a
    larger one it is a gemv on the weight as stored at one row and the transposed copy at more.
    Both in one interpreter, as onnxruntime's."""
    rng = np.random.default_rng([SEED, k, n])
    node = helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1, transA=trans_a, alpha=alpha, beta=beta, name="fc")
    params = {"w": scaled_weight(rng, n, k), "c": normal(rng, n)}
    if trans_a:   # A is [K, M]: its batch is K, M = 1 the one row
        vin = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [k, 1])]
        graph = helper.make_graph([node], "gemm", vin, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  initializer=[numpy_helper.from_array(v, name) for name, v in params.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        feeds = [{"a": normal(rng, k, 1)}]
    else:
        model = head_model([node], {"a": (1, k)}, params, ["y"])
        feeds = [{"a": normal(rng, b, k)} for b in (1, 3, 1)]
    head = run_both(model, feeds)
    packed = k * n <= interpreter._packed_max_weights()
    assert ("packed" in head._plan[0].ctx.memo) is packed
    # the transposed copy only for the 3 rows by the large weight
    assert ("B" in head._plan[0].ctx.memo) is (not packed and not trans_a)


@pytest.mark.parametrize("c,m,size", [(512, 100, 3), (512, 64, 3), (64, 134, 3), (32, 40, 4)])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_pointwise_conv_of_few_positions_reads_an_nchw_input_in_place(c, m, size, bias):
    """SqueezeNet's 1x1 convs on 3x3 maps: with a result of at most 1,200 elements the columns are
    the transposed view of the NCHW input (no channels-last copy); above it (64 -> 134 on 3x3:
    1,206) and at batch 2 the copy stays. Each as onnxruntime's."""
    rng = np.random.default_rng([SEED, c, m, size])
    params = {"w": scaled_weight(rng, m, c, 1, 1), **({"b": normal(rng, m)} if bias else {})}
    nodes = [helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["c"], name="pointwise"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    model = head_model(nodes, {"x": (1, c, size, size)}, params, ["y"])
    _proven(run_both(model, [{"x": normal(rng, b, c, size, size)} for b in (1, 2, 1)]))
    assert (size * size * m <= interpreter._SMALL_GEMM_TRANSPOSED) is (m != 134)
