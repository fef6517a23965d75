"""A chain's conv runs (enclave/interpreter.py, ``_ConvRun``): a Conv of floor.c's kernel with the
Relu or ReLU6's Clip after it stored by the kernel, then a spatial mean (GlobalAveragePool, ReduceMean over the
spatial axes) or a Concat along the channels written in place. SqueezeNet's Fire module and
classifier on random small maps and channel counts, both exporters' forms of the pool, against
onnxruntime; which steps become conv runs and which must not; the fast path's proof.

Random draws come from ``SEED`` and the draw number (both in the test id and printed)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from enclave import interpreter
from enclave.interpreter import _ConvRun
from splitseal.errors import ModelError
from tests.support.head_graphs import chains, head_model, normal, run_both, scaled_weight
from tests.unit.test_interpreter import package_whole

SEED = 20261202
DRAWS = 6


def _pool_and_flatten(source: str, out: str, channels: int, params: dict, *, dynamo: bool) -> list:
    """The spatial mean and flatten of ``source`` into ``out`` as torch's exporters write them:
    GlobalAveragePool and Flatten (torchscript) or ReduceMean over axes 2, 3 and Reshape (dynamo,
    its constants added to ``params``)."""
    if dynamo:
        params.update(axes=np.array([-1, -2], np.int64), shape=np.array([-1, channels], np.int64))
        return [helper.make_node("ReduceMean", [source, "axes"], ["pool"], name="pool", keepdims=1),
                helper.make_node("Reshape", ["pool", "shape"], [out], name="flat")]
    return [helper.make_node("GlobalAveragePool", [source], ["pool"], name="pool"),
            helper.make_node("Flatten", ["pool"], [out], name="flat")]


def _fire_head(rng, *, dynamo: bool, expand3x3_first: bool, bias: bool):
    """A Fire module (squeeze 1x1 + Relu, expand 1x1 and 3x3 + Relu each, Concat) and SqueezeNet's
    classifier (1x1 conv + Relu + pool + flatten) as torch's exporters write it: GlobalAveragePool
    and Flatten (torchscript) or ReduceMean over axes 2, 3 and Reshape (dynamo)."""
    c, s, e, classes = (int(v) for v in rng.integers(1, 40, size=4))
    h, w = int(rng.integers(1, 4)), int(rng.integers(1, 5))     # at most 12 positions: the kernel's maps
    params = {"ws": scaled_weight(rng, s, c, 1, 1), "we1": scaled_weight(rng, e, s, 1, 1),
              "we3": scaled_weight(rng, e + 3, s, 3, 3), "wc": scaled_weight(rng, classes, 2 * e + 3 + s * expand3x3_first, 1, 1)}
    if bias:
        params.update(bs=normal(rng, s), be1=normal(rng, e), be3=normal(rng, e + 3), bc=normal(rng, classes))
    b = (lambda name: [name]) if bias else (lambda name: [])
    # the chain runs through the Concat's first input made by a chain of its own: r1, or r3 after
    # rs (read three times, so no chain's), whose channels the conv then writes in the middle
    cat = ["rs", "r3", "r1"] if expand3x3_first else ["r1", "r3"]
    nodes = [
        helper.make_node("Conv", ["x", "ws", *b("bs")], ["sq"], name="squeeze"),
        helper.make_node("Relu", ["sq"], ["rs"], name="squeeze_relu"),
        helper.make_node("Conv", ["rs", "we1", *b("be1")], ["e1"], name="expand1x1"),
        helper.make_node("Relu", ["e1"], ["r1"], name="expand1x1_relu"),
        helper.make_node("Conv", ["rs", "we3", *b("be3")], ["e3"], name="expand3x3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["e3"], ["r3"], name="expand3x3_relu"),
        helper.make_node("Concat", cat, ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "wc", *b("bc")], ["cl"], name="classifier"),
        helper.make_node("Relu", ["cl"], ["rc"], name="classifier_relu"),
    ]
    nodes += _pool_and_flatten("rc", "y", classes, params, dynamo=dynamo)
    return head_model(nodes, {"x": (1, c, h, w)}, params, ["y"], 18 if dynamo else 15), (c, h, w)


def _steps(head, node_name: str) -> list:
    """The fast plan (for a batch of one) of the chain holding ``node_name``."""
    chain = next(c for c in chains(head) if node_name in c.names)
    # the memo's key is the one dynamic input's shape, or the tuple of several inputs' shapes
    plans = [p for key, p in chain.shapes.items() if (key if isinstance(key[0], int) else key[0])[0] == 1]
    assert plans and plans[0] is not None, chain.names
    return [step for step, _ in plans[0]]


CASES = [(d, k) for d in (False, True) for k in range(DRAWS)]


@pytest.mark.parametrize("dynamo, k", CASES, ids=[f"{'dynamo' if d else 'torchscript'}-draw{k}-seed{SEED}"
                                                  for d, k in CASES])
def test_fire_module_and_classifier_match_onnxruntime_as_conv_runs(dynamo, k):
    rng = np.random.default_rng([SEED, 300 + dynamo, k])
    first, bias = bool(k % 2), k % 3 != 2
    model, (c, h, w) = _fire_head(rng, dynamo=dynamo, expand3x3_first=first, bias=bias)
    print(f"seed={SEED} draw={k} dynamo={dynamo} x=(c={c}, {h}x{w}) expand3x3_first={first} bias={bias}")
    # a batch of one takes the Concat in place; a batch of two the node's own Concat
    head = run_both(model, [{"x": normal(rng, b, c, h, w)} for b in (1, 2, 1)])
    for chain in chains(head):
        assert chain.shapes and all(v is not None for v in chain.shapes.values()), chain.names
    squeeze, = _steps(head, "squeeze")
    assert isinstance(squeeze, _ConvRun) and squeeze.relu and not squeeze.mean and not squeeze.parts
    alone, joining = ("expand1x1", "expand3x3") if first else ("expand3x3", "expand1x1")
    expand, = _steps(head, alone)
    assert isinstance(expand, _ConvRun) and expand.relu and not expand.parts
    # the other expand + Relu + Concat, classifier + Relu + pool, then the flatten
    joined, classifier, flat = _steps(head, joining)
    own = [p[2] < 0 for p in joined.parts]
    assert isinstance(joined, _ConvRun) and joined.relu and own == ([False, True, False] if first else [True, False])
    assert isinstance(classifier, _ConvRun) and classifier.relu and classifier.mean
    assert not isinstance(flat, _ConvRun)


def test_what_is_not_a_conv_run_stays_the_nodes():
    """A computed weight, a map of more than 12 positions, a Concat along a spatial axis, a
    ReduceMean over one spatial axis and a pool without a Relu before it: each keeps the nodes'
    own code for its part (and matches onnxruntime)."""
    rng = np.random.default_rng([SEED, 310])
    params = {"w": scaled_weight(rng, 6, 4, 1, 1), "k": np.array(0.5, np.float32),
              "w2": scaled_weight(rng, 5, 6, 1, 1), "w3": scaled_weight(rng, 7, 6, 1, 1), "other": normal(rng, 1, 5, 3, 3),
              "axes": np.array([3], np.int64)}
    nodes = [
        helper.make_node("Mul", ["w", "k"], ["wk"], name="computed_weight"),
        helper.make_node("Conv", ["x", "wk"], ["a"], name="conv_by_computed"),
        helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
        helper.make_node("Conv", ["ar", "w2"], ["b2"], name="conv_then_spatial_cat"),
        helper.make_node("Concat", ["b2", "other"], ["cat"], name="spatial_cat", axis=2),
        helper.make_node("Relu", ["cat"], ["y1"], name="relu_cat"),
        helper.make_node("Conv", ["ar", "w3"], ["c3"], name="conv_then_pool"),
        helper.make_node("GlobalAveragePool", ["c3"], ["y2"], name="pool_without_relu"),
        helper.make_node("Conv", ["big", "w2"], ["d"], name="conv_of_16_positions"),
        helper.make_node("Relu", ["d"], ["dr"], name="relu_d"),
        helper.make_node("ReduceMean", ["dr", "axes"], ["y3"], name="mean_over_width", keepdims=1),
    ]
    model = head_model(nodes, {"x": (1, 4, 3, 3), "big": (1, 6, 4, 4)}, params, ["y1", "y2", "y3"], 18)
    head = run_both(model, [{"x": normal(rng, 1, 4, 3, 3), "big": normal(rng, 1, 6, 4, 4)}])
    runs = {step.step.node.name: step for chain in chains(head) for plan in chain.shapes.values()
            for step, _ in plan or () if isinstance(step, _ConvRun)}
    assert "conv_by_computed" not in runs and "conv_of_16_positions" not in runs
    assert not runs["conv_then_spatial_cat"].parts and not runs["conv_then_spatial_cat"].relu
    assert not runs["conv_then_pool"].mean


def test_a_conv_run_that_differs_is_not_used(monkeypatch):
    """The first call per input shape proves a conv run against the nodes' own code bit for bit:
    one off by one part in 10^4 (injected) is never used for that shape."""
    real = _ConvRun.apply

    def off(self, value, inputs):
        y = real(self, value, inputs)
        y *= np.float32(1.0001)
        return y

    monkeypatch.setattr(interpreter._ConvRun, "apply", off)
    model, (c, h, w) = _fire_head(np.random.default_rng([SEED, 320]), dynamo=True, expand3x3_first=False, bias=True)
    head = run_both(model, [{"x": normal(np.random.default_rng(9), 1, c, h, w)}])
    assert all(list(chain.shapes.values()) == [None] for chain in chains(head))


def test_a_concat_input_of_another_dtype_fails_closed():
    """The in-place Concat copies its other inputs with casting "no": one of another dtype (here
    float64, handed to the proven fast path directly) fails with the Concat's chain named, it is
    not converted."""
    model, (c, h, w) = _fire_head(np.random.default_rng([SEED, 330]), dynamo=False, expand3x3_first=False, bias=True)
    head = run_both(model, [{"x": normal(np.random.default_rng(10), 1, c, h, w)}])
    chain = next(ch for ch in chains(head) if "expand1x1" in ch.names)
    (key, plan), = chain.shapes.items()
    joined = plan[0][0]
    other = next(p[2] for p in joined.parts if p[2] >= 0)
    inputs = [head._env_template[s] for s in chain.input_slots]
    for i, shape in zip(chain.dynamic, key):
        inputs[i] = normal(np.random.default_rng(11), *shape)
    assert chain._fast(tuple(inputs), plan).shape == (1, plan[-1][1][1])
    inputs[other] = inputs[other].astype(np.float64)
    with pytest.raises(ModelError, match="expand1x1"):
        chain._fast(tuple(inputs), plan)


def _relu6_head(rng, *, dynamo: bool, bounds: tuple[float | None, float | None] = (0.0, 6.0)):
    """MobileNetV2's last conv block and classifier as torch's exporters write it: a 1x1 Conv,
    ReLU6 as a Clip by two scalar initializers, the pool (GlobalAveragePool + Flatten, or
    ReduceMean + Reshape), a Gemm. ``bounds``: the Clip's (min, max), None an absent input."""
    c, m, classes = (int(v) for v in rng.integers(1, 40, size=3))
    h, w = int(rng.integers(1, 4)), int(rng.integers(1, 5))     # at most 12 positions: the kernel's maps
    params = {"wc": scaled_weight(rng, m, c, 1, 1), "bc": normal(rng, m),
              "wf": scaled_weight(rng, classes, m), "bf": normal(rng, classes)}
    clip_inputs = ["conv"]
    for name, bound in zip(("lo", "hi"), bounds):
        if bound is None:
            clip_inputs.append("")
        else:
            params[name] = np.array(bound, np.float32)
            clip_inputs.append(name)
    nodes = [helper.make_node("Conv", ["x", "wc", "bc"], ["conv"], name="last_conv"),
             helper.make_node("Clip", clip_inputs, ["act"], name="relu6")]
    nodes += _pool_and_flatten("act", "flat", m, params, dynamo=dynamo)
    nodes.append(helper.make_node("Gemm", ["flat", "wf", "bf"], ["y"], name="classifier", transB=1))
    return head_model(nodes, {"x": (1, c, h, w)}, params, ["y"], 18 if dynamo else 13), (c, h, w)


@pytest.mark.parametrize("dynamo, k", CASES, ids=[f"{'dynamo' if d else 'torchscript'}-draw{k}-seed{SEED}"
                                                  for d, k in CASES])
def test_relu6_block_matches_onnxruntime_as_one_conv_run(dynamo, k):
    """Conv, the Clip of ReLU6 and the pool: one conv run whose kernel stores the clipped values
    and their means (one-sided Clips too), proven against the nodes' own code and matching
    onnxruntime."""
    rng = np.random.default_rng([SEED, 340 + dynamo, k])
    bounds = [(0.0, 6.0), (None, 0.25), (-0.5, None)][k % 3]
    model, (c, h, w) = _relu6_head(rng, dynamo=dynamo, bounds=bounds)
    print(f"seed={SEED} draw={k} dynamo={dynamo} x=(c={c}, {h}x{w}) bounds={bounds}")
    head = run_both(model, [{"x": 3 * normal(rng, b, c, h, w)} for b in (1, 2, 1)])
    run = _steps(head, "last_conv")[0]
    lo, hi = (-np.inf if bounds[0] is None else bounds[0]), (np.inf if bounds[1] is None else bounds[1])
    assert isinstance(run, _ConvRun) and not run.relu and run.clip == (lo, hi) and run.mean


def _conv_runs(head) -> list[_ConvRun]:
    """Every conv run of ``head``'s chains, over all the shapes they were planned for."""
    return [step for chain in chains(head) for plan in chain.shapes.values() for step, _ in plan or ()
            if isinstance(step, _ConvRun)]


def test_a_clip_by_nan_or_a_computed_bound_stays_the_nodes():
    """A NaN bound (np.maximum by NaN is NaN everywhere; the kernel's compare would keep the value)
    and a bound computed in the head keep the Clip node's own code after the conv."""
    rng = np.random.default_rng([SEED, 350])
    model, (c, h, w) = _relu6_head(rng, dynamo=False, bounds=(float("nan"), 6.0))
    pkg, index, _, _ = package_whole(model)
    head = interpreter.HeadInterpreter(pkg, index)
    x = normal(rng, 1, c, h, w)
    for _ in range(2):
        assert np.isnan(head.run({"x": x})["y"]).all()
    runs = _conv_runs(head)
    assert runs and all(r.clip is None for r in runs)
    assert "relu6" in next(ch for ch in chains(head) if "last_conv" in ch.names).names
    params = {"w": scaled_weight(rng, 6, 4, 1, 1)}
    nodes = [helper.make_node("ReduceMax", ["x"], ["lo_x"], name="computed_bound", keepdims=0),
             helper.make_node("Conv", ["x", "w"], ["a"], name="conv"),
             helper.make_node("Clip", ["a", "lo_x"], ["y"], name="clip_by_computed")]
    model = head_model(nodes, {"x": (1, 4, 2, 2)}, params, ["y"], 13)
    head = run_both(model, [{"x": normal(rng, 1, 4, 2, 2)}])
    runs = _conv_runs(head)
    assert runs and all(r.clip is None for r in runs)
    assert "clip_by_computed" in next(ch for ch in chains(head) if "conv" in ch.names).names
