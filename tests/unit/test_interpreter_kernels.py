"""The interpreter's Conv, pooling and RNN kernels against onnxruntime on the shapes that pick each
of their code paths: the five product forms of the dense convs (floor.c's kernel on maps of at
most 12 positions, one product of the columns, channel blocks, weight rows; blocked only with few
columns and a large product; gemm.c's packed kernel where it has AVX-512 tiles, each other form
also tested with it turned off), depthwise convs
over channels-last windows, a conv's channels-last output feeding the next ops, MaxPool and
AveragePool over channels-last windows, GlobalAveragePool of every rank, LSTM/GRU at batch 1 (the
heads' case) and above. Weights are seeded (``SEED``; the test id names the case)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from enclave import interpreter, native
from enclave.interpreter import (_CACHED_WEIGHT_BYTES, _NATIVE_POSITIONS, _SMALL_GEMM_MACS, HeadInterpreter,
                                 _conv_product)
from tests.support.head_graphs import head_model, normal, scaled_weight
from tests.unit.test_interpreter import compare, package_whole
from tests.unit.test_interpreter_rnn import rnn_model

SEED = 20261202


def _positions(x_shape, w_shape, attrs) -> tuple[int, int]:
    """(output positions per image, columns: positions of the whole batch)"""
    pads = attrs.get("pads", [0, 0, 0, 0])
    s = attrs.get("strides", [1, 1])
    d = attrs.get("dilations", [1, 1])
    out = [(x_shape[2 + i] + pads[i] + pads[i + 2] - d[i] * (w_shape[2 + i] - 1) - 1) // s[i] + 1 for i in range(2)]
    return out[0] * out[1], x_shape[0] * out[0] * out[1]


# (id, X shape, W shape, attributes, the product form the shapes pick)
CONV_PATHS = [
    # at most 12 positions per image: floor.c's kernel, every geometry
    ("native-pointwise", (1, 64, 3, 3), (100, 64, 1, 1), {}, "native"),
    ("native-pointwise-strided-batch3", (3, 32, 5, 5), (48, 32, 1, 1), {"strides": [2, 2]}, "native"),
    ("native-pointwise-padded-block", (1, 256, 2, 2), (1003, 256, 1, 1), {}, "native"),
    ("native-pointwise-batch2", (2, 256, 2, 2), (520, 256, 1, 1), {}, "native"),
    ("native-im2col-padded", (1, 64, 3, 3), (256, 64, 3, 3), {"pads": [1, 1, 1, 1]}, "native"),
    ("native-im2col-strided-batch2", (2, 256, 4, 4), (300, 256, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]},
     "native"),
    ("native-im2col-dilated", (1, 40, 4, 4), (13, 40, 3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2],
                                                              "strides": [2, 2]}, "native"),
    ("native-im2col-asymmetric", (2, 8, 5, 4), (12, 8, 3, 2), {"pads": [1, 0, 2, 1], "strides": [2, 1]}, "native"),
    ("native-1x1-map", (2, 24, 1, 1), (7, 24, 1, 1), {}, "native"),
    ("pointwise-columns", (1, 64, 4, 4), (100, 64, 1, 1), {}, "columns"),
    ("pointwise-strided-batch3-columns", (3, 32, 9, 9), (48, 32, 1, 1), {"strides": [2, 2]}, "columns"),
    # many positions of an NCHW input: the weight times the input in place
    ("pointwise-many-positions-nchw", (2, 32, 9, 9), (40, 32, 1, 1), {}, "columns"),
    ("im2col-many-positions-columns", (1, 16, 14, 14), (24, 16, 3, 3), {"pads": [1, 1, 1, 1]}, "columns"),
    ("im2col-strided-columns", (2, 8, 9, 7), (12, 8, 3, 2), {"pads": [1, 0, 1, 1], "strides": [2, 1]}, "columns"),
    # few columns, product over the limit, weight within the cache size: blocks of output channels
    ("pointwise-channel-blocks-padded", (1, 256, 4, 4), (1000, 256, 1, 1), {}, "channel blocks"),
    ("im2col-channel-blocks", (1, 64, 4, 4), (256, 64, 3, 3), {"pads": [1, 1, 1, 1]}, "channel blocks"),
    # few columns, a weight over the cache size: blocks of weight rows
    ("im2col-weight-rows-padded", (1, 512, 4, 4), (161, 512, 3, 3), {"pads": [1, 1, 1, 1]}, "weight rows"),
    ("im2col-weight-rows-strided", (1, 256, 7, 7), (300, 256, 3, 3),
     {"pads": [1, 1, 1, 1], "strides": [2, 2]}, "weight rows"),
    ("im2col-weight-rows-dilated", (1, 512, 7, 7), (130, 512, 3, 3),
     {"pads": [2, 2, 2, 2], "dilations": [2, 2], "strides": [2, 2]}, "weight rows"),
]


@pytest.fixture(params=[False, True], ids=["numpy-products", "packed-tiles"])
def packed_tiles(request, monkeypatch):
    """Whether the dense convs that gemm.c's AVX-512 tiles take run there: off, every other form
    is taken as on a machine without them; on, only where this machine's build has them."""
    if not request.param:
        monkeypatch.setattr(interpreter, "_packed_conv", lambda cols, depth, m: False)
    elif not native.load("gemm").AVX512:
        pytest.skip("this machine's build of gemm.c has no AVX-512 tiles")
    return request.param


@pytest.mark.parametrize("case", CONV_PATHS, ids=[c[0] for c in CONV_PATHS])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_conv_product_forms_match_onnxruntime(case, bias, packed_tiles):
    _, x_shape, w_shape, attrs, form = case
    positions, cols = _positions(x_shape, w_shape, attrs)
    depth = int(np.prod(w_shape[1:]))
    assert (positions <= _NATIVE_POSITIONS) == (form == "native")
    if packed_tiles and form != "native" and interpreter._packed_conv(cols, depth, w_shape[0]):
        form = "packed"
    product, block = _conv_product(cols, depth, w_shape[0])
    assert form in ("native", "packed") or product == form, (product, block)
    if form not in ("columns", "native", "packed"):
        assert cols * depth * block <= _SMALL_GEMM_MACS < cols * depth * w_shape[0]
        assert (w_shape[0] * depth * 4 <= _CACHED_WEIGHT_BYTES) == (form == "channel blocks")
    rng = np.random.default_rng([SEED, CONV_PATHS.index(case), bias])
    params = {"w": scaled_weight(rng, *w_shape)}
    if bias:
        params["b"] = normal(rng, w_shape[0])
    node = helper.make_node("Conv", ["x", *params], ["y"], name="conv", kernel_shape=list(w_shape[2:]), **attrs)
    x = normal(rng, *x_shape)
    model = head_model([node], {"x": x_shape}, params, ["y"])
    compare(model, {"x": x}, atol=2e-5)
    pkg, index, _, _ = package_whole(model)
    head = HeadInterpreter(pkg, index)
    head.run({"x": x})
    assert [v.product for k, v in head._plan[0].ctx.memo.items() if k[0] == "conv"] == [form]   # the path taken


def test_one_interpreter_follows_the_batch_size_across_product_forms(monkeypatch):
    """Batch 1 and 5 of the same conv pick different forms (5 x 16 positions is past the few
    columns): each keeps its own weight layout, and going back to batch 1 reuses the first.
    (With gemm.c's AVX-512 tiles both would be "packed": turned off here.)"""
    monkeypatch.setattr(interpreter, "_packed_conv", lambda cols, depth, m: False)
    from orchestrator.models.backbone import ort_session
    rng = np.random.default_rng([SEED, 100])
    params = {"w": scaled_weight(rng, 600, 64, 3, 3), "b": normal(rng, 600)}
    assert _conv_product(16, 576, 600)[0] == "channel blocks" and _conv_product(80, 576, 600)[0] == "columns"
    model = head_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                   {"x": (1, 64, 4, 4)}, params, ["y"])
    pkg, index, _, _ = package_whole(model)
    head = HeadInterpreter(pkg, index)
    sess = ort_session(model.SerializeToString())
    layouts = []
    for batch in (1, 5, 1, 5):
        x = normal(rng, batch, 64, 4, 4)
        np.testing.assert_allclose(head.run({"x": x})["y"], sess.run(["y"], {"x": x})[0], atol=2e-5, rtol=1e-5)
        memo = head._plan[0].ctx.memo
        layouts.append({k: v[1] for k, v in memo.items() if k[0] == "conv weight"})
    both = ["channel blocks", "columns"]
    assert [sorted(k[1] for k in lay) for lay in layouts] == [["channel blocks"], both, both, both]
    assert all(layouts[3][k] is v for k, v in layouts[1].items())   # kept, not laid out again


# (id, X shape, attributes): depthwise convs as SFace and MobileNet-style heads have them
DEPTHWISE = [("sface-1024ch-7x7", (1, 1024, 7, 7), {"pads": [1, 1, 1, 1]}),
             ("strided-batch2", (2, 48, 9, 8), {"pads": [1, 0, 1, 1], "strides": [2, 2]}),
             ("dilated-unpadded", (1, 16, 8, 8), {"dilations": [2, 2]})]


@pytest.mark.parametrize("case", DEPTHWISE, ids=[c[0] for c in DEPTHWISE])
def test_depthwise_conv_matches_onnxruntime(case):
    _, x_shape, attrs = case
    rng = np.random.default_rng([SEED, 150, DEPTHWISE.index(case)])
    c = x_shape[1]
    params = {"w": scaled_weight(rng, c, 1, 3, 3), "b": normal(rng, c)}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="dw", group=c, kernel_shape=[3, 3], **attrs)
    compare(head_model([node], {"x": x_shape}, params, ["y"]), {"x": normal(rng, *x_shape)}, atol=2e-5)


@pytest.mark.parametrize("k", range(4), ids=[f"draw{k}-seed{SEED}" for k in range(4)])
def test_conv_outputs_feed_the_next_ops(k):
    """A conv's result is an NCHW view of a channels-last block: the ops after it (a depthwise conv
    reading it unpadded, pooling, a second dense conv, Add, Concat, Clip, GlobalAveragePool,
    Flatten, Gemm) get it as it is, against onnxruntime on random sizes."""
    rng = np.random.default_rng([SEED, 200, k])
    n, c = int(rng.integers(1, 3)), int(rng.integers(2, 9))
    h, w = (int(v) for v in rng.integers(5, 9, size=2))
    m = int(rng.integers(2, 9))
    params = {
        "w1": scaled_weight(rng, m, c, 1, 1), "b1": normal(rng, m),
        "wd": scaled_weight(rng, m, 1, 3, 3),
        "w2": scaled_weight(rng, m, m, 3, 3), "b2": normal(rng, m),
        "w3": scaled_weight(rng, m, m, 1, 1),
        "lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32),
        "fc": scaled_weight(rng, 3, 3 * m), "fcb": normal(rng, 3),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="pointwise"),
        helper.make_node("Relu", ["a"], ["ar"], name="relu"),
        helper.make_node("Conv", ["ar", "wd"], ["d"], name="depthwise", group=m, kernel_shape=[3, 3]),
        helper.make_node("MaxPool", ["ar"], ["mp"], name="pool", kernel_shape=[3, 3]),
        helper.make_node("Add", ["d", "mp"], ["s"], name="add"),
        helper.make_node("Conv", ["s", "w2", "b2"], ["e"], name="dense", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["s", "w3"], ["f"], name="pointwise2"),
        helper.make_node("AveragePool", ["f"], ["fp"], name="avgpool", kernel_shape=[1, 1]),
        helper.make_node("Concat", ["e", "fp", "s"], ["cat"], name="cat", axis=1),
        helper.make_node("Clip", ["cat", "lo", "hi"], ["cl"], name="clip"),
        helper.make_node("GlobalAveragePool", ["cl"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["fl"], name="flat"),
        helper.make_node("Gemm", ["fl", "fc", "fcb"], ["y"], name="fc", transB=1),
    ]
    x = normal(rng, n, c, h, w)
    print(f"seed={SEED} draw={k} x={x.shape} m={m}")
    compare(head_model(nodes, {"x": x.shape}, params, ["y", "e"]), {"x": x}, atol=2e-5)


# (id, op, X shape, attributes): pooling as CNN stems and SqueezeNet have it, over channels-last windows
POOLS = [("maxpool-stem", "MaxPool", (1, 64, 56, 56), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
         ("maxpool-ceil", "MaxPool", (2, 96, 13, 13), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
         ("avgpool-pads-batch2", "AveragePool", (2, 32, 9, 9), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
         ("avgpool-ceil-incl", "AveragePool", (1, 48, 10, 10),
          {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 1, 0, 0], "count_include_pad": 1})]


@pytest.mark.parametrize("case", POOLS, ids=[c[0] for c in POOLS])
def test_pooling_matches_onnxruntime(case):
    _, op, x_shape, attrs = case
    rng = np.random.default_rng([SEED, 250, POOLS.index(case)])
    node = helper.make_node(op, ["x"], ["y"], name="pool", **attrs)
    compare(head_model([node], {"x": x_shape}, {"unused": np.zeros(1, np.float32)}, ["y"]), {"x": normal(rng, *x_shape)},
            atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 6, 3, 4), (2, 3, 2, 3, 4), (1, 1280, 2, 2)],
                         ids=["rank3", "rank4", "rank5", "mobilenet"])
def test_global_average_pool_of_every_rank(shape):
    rng = np.random.default_rng([SEED, 300, len(shape)])
    node = helper.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")
    x = normal(rng, *shape)
    compare(head_model([node], {"x": shape}, {"unused": np.zeros(1, np.float32)}, ["y"]), {"x": x}, atol=1e-6)


# (id, X shape, axes, keepdims): ReduceMean over the spatial axes is the dynamo export's pooling
SPATIAL_MEANS = [("dynamo-pool", (1, 1280, 2, 2), [2, 3], 1), ("negative-axes-flat", (2, 7, 3, 5), [-2, -1], 0),
                 ("rank3", (2, 6, 9), [2], 1), ("rank5", (1, 4, 2, 3, 2), [2, 3, 4], 0),
                 ("not-spatial", (2, 6, 3, 3), [1, 2, 3], 1), ("unsorted", (1, 8, 3, 4), [3, 2], 1)]


@pytest.mark.parametrize("case", SPATIAL_MEANS, ids=[c[0] for c in SPATIAL_MEANS])
def test_reduce_mean_over_the_spatial_axes_matches_onnxruntime(case):
    _, shape, axes, keep = case
    rng = np.random.default_rng([SEED, 350, SPATIAL_MEANS.index(case)])
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean", keepdims=keep)
    compare(head_model([node], {"x": shape}, {"axes": np.array(axes, np.int64)}, ["y"], opset=18),
            {"x": normal(rng, *shape)}, atol=1e-6)


# (op, direction, initial states, batch, linear_before_reset): the CRNN heads' shape (seq 32,
# input 64, hidden 32) at batch 1, where the LSTM takes np.dot, and at batch 3 (np.matmul)
RNN_PATHS = [("LSTM", "bidirectional", "none", 1, 0), ("LSTM", "bidirectional", "input", 3, 0),
             ("LSTM", "reverse", "param", 1, 0), ("LSTM", "forward", "input", 2, 0),
             ("GRU", "bidirectional", "none", 1, 1), ("GRU", "bidirectional", "input", 3, 1),
             ("GRU", "bidirectional", "param", 1, 0), ("GRU", "reverse", "input", 2, 0)]


@pytest.mark.parametrize("op, direction, initial, batch, lbr", RNN_PATHS,
                         ids=[f"{o}-{d}-{i}-batch{b}-lbr{r}" for o, d, i, b, r in RNN_PATHS])
def test_rnn_at_the_heads_shapes_matches_onnxruntime(op, direction, initial, batch, lbr):
    rng = np.random.default_rng([SEED, 400, RNN_PATHS.index((op, direction, initial, batch, lbr))])
    attrs = {"linear_before_reset": lbr} if op == "GRU" else {}
    model, feed = rnn_model(op, rng, direction=direction, initial=initial, seq=32, batch=batch, inp=64, hidden=32,
                            **attrs)
    compare(model, feed, atol=3e-5)


def test_rnn_weights_are_prepared_once_per_node_and_repeat_exactly():
    """The gate-major weights are kept per node: a second run on new inputs reuses them and a
    repeat of the first input gives the first result bit for bit."""
    rng = np.random.default_rng([SEED, 500])
    model, feed = rnn_model("LSTM", rng, direction="bidirectional", initial="none", seq=5, batch=1, inp=4, hidden=3)
    pkg, index, _, _ = package_whole(model)
    head = HeadInterpreter(pkg, index)
    first = head.run(feed)
    ctx = head._plan[0].ctx
    prepared = ctx.memo["rnn_weights"][3]
    other = {k: v[::-1].copy() for k, v in feed.items()}
    head.run(other)
    assert ctx.memo["rnn_weights"][3] is prepared
    again = head.run(feed)
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])
