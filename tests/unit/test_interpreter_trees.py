"""ai.onnx.ml TreeEnsembleClassifier / TreeEnsembleRegressor in the enclave interpreter against
onnxruntime, on random ensembles drawn from a fixed seed (printed; the test id carries the draw):
random depths, features, branch modes, leaf weights, base values and post transforms, in the
forms skl2onnx writes (the classifier's binary single-score form included). Both ways the
numbers reach the interpreter are run: as attributes, and lifted into head parameters (what the
split does)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from enclave.interpreter import HeadInterpreter, node_problems
from enclave.package import HeadPackage, NodeSpec, build_parameter_blob, encode_graph
from orchestrator.models import load_model
from orchestrator.models.backbone import ort_session
from orchestrator.models.split import head_to_graph
from splitseal.errors import UnsupportedOperatorError

TREE_OPS = ["ai.onnx.ml:TreeEnsembleClassifier", "ai.onnx.ml:TreeEnsembleRegressor"]
SEED = 20241003
DRAWS = 8
MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


def random_trees(rng, n_trees: int, n_features: int, thresholds: np.ndarray, modes: list[str]) -> dict:
    """nodes_* attributes of ``n_trees`` random binary trees (node ids from 0, root first) and the
    list of (tree, node) leaves."""
    a = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
                         "nodes_truenodeids", "nodes_falsenodeids", "nodes_hitrates",
                         "nodes_missing_value_tracks_true")}
    leaves = []
    for t in range(n_trees):
        depth = int(rng.integers(0, 5))
        count = 0

        def grow(d: int) -> int:
            nonlocal count
            me = count
            count += 1
            k = len(a["nodes_nodeids"])
            for key in a:
                a[key].append(0)
            a["nodes_treeids"][k], a["nodes_nodeids"][k], a["nodes_hitrates"][k] = t, me, 1.0
            if d >= depth or (d > 0 and rng.random() < 0.25):
                a["nodes_modes"][k], a["nodes_values"][k] = "LEAF", 0.0
                leaves.append((t, me))
                return me
            a["nodes_featureids"][k] = int(rng.integers(0, n_features))
            a["nodes_modes"][k] = str(rng.choice(modes))
            a["nodes_values"][k] = float(rng.choice(thresholds))
            a["nodes_truenodeids"][k] = grow(d + 1)
            a["nodes_falsenodeids"][k] = grow(d + 1)
            return me
        grow(0)
    return a, leaves


def tree_model(op: str, attrs: dict, n_features: int, n_out: int, with_label: bool = False) -> onnx.ModelProto:
    """One tree node; a classifier's int64 label output is a graph output only ``with_label`` (a
    head returns float32 only: the split serves the probabilities, the output policy the label)."""
    outs = ["label", "probabilities"] if op == "TreeEnsembleClassifier" else ["variable"]
    node = helper.make_node(op, ["x"], outs, name="trees", domain="ai.onnx.ml", **attrs)
    vout = ([helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])] if with_label else []) + (
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_out])]
        if len(outs) == 2 else [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", n_out])])
    graph = helper.make_graph([node], "trees", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_features])],
                              vout)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def draw(op: str, k: int, rng, with_label: bool = False) -> tuple[onnx.ModelProto, np.ndarray, dict]:
    n_features = int(rng.integers(1, 7))
    # thresholds on a grid the inputs also hit, so EQ / NEQ and the <= / < boundary are exercised
    grid = np.round(np.linspace(-1.5, 1.5, 7), 2).astype(np.float32)
    x = rng.choice(np.concatenate([grid, rng.standard_normal(20).astype(np.float32)]),
                   size=(int(rng.integers(1, 40)), n_features)).astype(np.float32)
    modes = MODES if k % 2 else ["BRANCH_LEQ"]
    attrs, leaves = random_trees(rng, int(rng.integers(1, 6)), n_features, grid, modes)
    if op == "TreeEnsembleClassifier":
        n_classes = 2 if k < 4 else int(rng.integers(3, 6))
        ids = [0] if n_classes == 2 else list(range(n_classes))
        positive = n_classes == 2 and k % 2 == 0
        w = {"class_treeids": [], "class_nodeids": [], "class_ids": [], "class_weights": []}
        for t, i in leaves:
            for c in ids:
                if n_classes > 2 and rng.random() < 0.2:
                    continue   # a leaf without a vote for this class
                w["class_treeids"].append(t)
                w["class_nodeids"].append(i)
                w["class_ids"].append(c)
                w["class_weights"].append(float(rng.random() * 0.3 if positive else rng.standard_normal()))
        attrs.update(w, classlabels_int64s=[int(v) for v in rng.choice(100, n_classes, replace=False)])
        attrs["post_transform"] = str(rng.choice(["NONE", "LOGISTIC"] if n_classes == 2 else
                                                 ["NONE", "LOGISTIC", "SOFTMAX"]))
        nb = int(rng.choice([0, 1, 2])) if n_classes == 2 else int(rng.choice([0, n_classes]))
        n_out = n_classes
    else:
        n_targets = int(rng.integers(1, 4))
        w = {"target_treeids": [], "target_nodeids": [], "target_ids": [], "target_weights": []}
        for t, i in leaves:
            for c in range(n_targets):
                w["target_treeids"].append(t)
                w["target_nodeids"].append(i)
                w["target_ids"].append(c)
                w["target_weights"].append(float(rng.standard_normal()))
        attrs.update(w, n_targets=n_targets, aggregate_function=str(rng.choice(["SUM", "AVERAGE"])))
        nb = int(rng.choice([0, n_targets]))
        n_out = n_targets
    if nb:
        attrs["base_values"] = [float(v) for v in rng.standard_normal(nb)]
    return tree_model(op, attrs, n_features, n_out, with_label), x, attrs


def _package(model: onnx.ModelProto, lift: bool):
    imp = load_model(model.SerializeToString())
    if not lift:
        for name in [p for ps in imp.lifted.values() for p in ps.values()]:
            del imp.initializers[name]
        imp.lifted.clear()
    graph, params = head_to_graph(imp, imp.model, [v.name for v in imp.inputs], "label_scores", {})
    if not params:
        params = [("unused", np.zeros(1, np.float32))]
        import dataclasses

        from enclave.package import TensorSpec
        graph = dataclasses.replace(graph, parameters=(TensorSpec("unused", (1,), "float32"),))
    blob, index = build_parameter_blob(params)
    return HeadPackage(encode_graph(graph), blob), index, graph


CASES = [(op, k, lift) for op in ("TreeEnsembleClassifier", "TreeEnsembleRegressor") for k in range(DRAWS)
         for lift in (True, False)]


@pytest.mark.parametrize("op, k, lift", CASES,
                         ids=[f"{op}-draw{k}-{'lifted' if lift else 'attrs'}-seed{SEED}" for op, k, lift in CASES])
def test_tree_ensemble_matches_onnxruntime_on_random_draws(op, k, lift):
    rng = np.random.default_rng([SEED, len(op), k])
    model, x, attrs = draw(op, k, rng)
    print(f"seed={SEED} op={op} draw={k} x={x.shape} nodes={len(attrs['nodes_nodeids'])} "
          f"post={attrs.get('post_transform')} agg={attrs.get('aggregate_function')} "
          f"base={len(attrs.get('base_values', []))} modes={sorted(set(attrs['nodes_modes']))}")
    pkg, index, graph = _package(model, lift)
    assert [n.domain for n in graph.nodes] == ["ai.onnx.ml"] and graph.domains == {"ai.onnx.ml": 3}
    if lift:
        assert len(graph.nodes[0].inputs) >= 3 and "nodes_values" not in graph.nodes[0].attrs
    ours = HeadInterpreter(pkg, index).run({"x": x})
    sess = ort_session(model.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    theirs = dict(zip(names, sess.run(names, {"x": x})))
    for n in names:
        assert ours[n].dtype == np.float32 and ours[n].shape == theirs[n].shape
        np.testing.assert_allclose(ours[n], theirs[n], atol=2e-5, rtol=1e-5)


def test_label_side_output_equals_onnxruntime():
    """The classifier's label output (int64) as onnxruntime computes it, binary and multi-class."""
    from enclave.interpreter import OPERATORS, _Ctx
    for k in (0, 1, 2, 3, 4, 5, 6, 7):
        rng = np.random.default_rng([SEED, 7, k])
        model, x, _ = draw("TreeEnsembleClassifier", k, rng, with_label=True)
        imp = load_model(model.SerializeToString())
        imp.lifted.clear()
        node = head_to_graph(imp, imp.model, ["x"], "label", {})[0].nodes[0]
        label, _ = OPERATORS["ai.onnx.ml:TreeEnsembleClassifier"].impl(_Ctx(node, 3, 1 << 25), x)
        want = ort_session(model.SerializeToString()).run(["label"], {"x": x})[0]
        np.testing.assert_array_equal(label, want)


@pytest.mark.parametrize("change, why", [
    ({"post_transform": "PROBIT"}, "PROBIT"),
    ({"aggregate_function": "MAX"}, "MAX"),
])
def test_unsupported_variants_are_refused(change, why):
    rng = np.random.default_rng(SEED)
    op = "TreeEnsembleRegressor"
    model, x, attrs = draw(op, 3, rng)
    attrs.update(change)
    model = tree_model(op, attrs, x.shape[1], attrs["n_targets"])
    pkg, index, _ = _package(model, True)
    with pytest.raises(UnsupportedOperatorError, match=why):
        HeadInterpreter(pkg, index).run({"x": x})


def test_domains_fail_closed():
    node = NodeSpec("t", "TreeEnsembleClassifier", ("x",), ("l", "p"), {}, "ai.onnx.ml")
    assert node_problems(node, 17, {}, {"ai.onnx.ml": 3}) == []
    assert node_problems(node, 17, {}, {}) == ["the model imports no opset of domain 'ai.onnx.ml'"]
    assert "opsets 1..4" in node_problems(node, 17, {}, {"ai.onnx.ml": 5})[0]
    # an ai.onnx.ml operator the interpreter lacks, an unknown domain, a tree op without its domain
    assert "not implemented" in node_problems(NodeSpec("s", "SVMClassifier", ("x",), ("y",), {}, "ai.onnx.ml"),
                                              17, {}, {"ai.onnx.ml": 3})[0]
    assert node_problems(NodeSpec("c", "Conv", ("x",), ("y",), {}, "com.microsoft"), 17, {}, {}) == [
        "domain 'com.microsoft' is not implemented by the enclave interpreter"]
    assert "not implemented" in node_problems(NodeSpec("t", "TreeEnsembleClassifier", ("x",), ("y",), {}), 17, {})[0]
