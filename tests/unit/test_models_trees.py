"""The reference tree model (models/breast_cancer_gbt.onnx: StandardScaler -> gradient-boosted
trees, scikit-learn's breast cancer data, converted by skl2onnx) split by
rules/breast_cancer_gbt.toml: the scaler in the public backbone, the trees and their numbers
protected in the enclave, backbone then head (onnxruntime and the enclave interpreter) equal
to the whole model on the held-out split, the predictions equal to scikit-learn's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from enclave.interpreter import HeadInterpreter
from enclave.package import decode_graph, decode_head_package, decode_index
from orchestrator.models import load_model
from orchestrator.models.backbone import Backbone
from orchestrator.models.rule import load_rule
from orchestrator.models.split import split_model
from orchestrator.training import trees

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / trees.MODEL_FILE
RULE = ROOT / "rules" / "breast_cancer_gbt.toml"


@pytest.fixture(scope="module")
def data():
    return trees.load_split()


@pytest.fixture(scope="module")
def split(data, tmp_path_factory):
    _, _, x_te, _ = data
    res = split_model(load_model(MODEL), load_rule(RULE), x_te, sample_source="breast cancer test split")
    out = tmp_path_factory.mktemp("gbt")
    res.write(out, model_path=str(MODEL), rule_path=str(RULE))
    return res, out


def test_committed_model_is_the_pipeline_retrained_and_converted(data):
    """Retraining (seeded) and converting again computes what the committed file computes."""
    from orchestrator.models.backbone import ort_session
    _, _, x_te, _ = data
    pipeline = trees.train()
    fresh = trees.export(pipeline)
    committed = onnx.load(str(MODEL))
    assert [o.name for o in committed.graph.output] == ["probabilities"]
    assert {(i.domain or "ai.onnx") for i in committed.opset_import} == {"ai.onnx", "ai.onnx.ml"}
    want = ort_session(MODEL.read_bytes()).run(["probabilities"], {"X": x_te})[0]
    np.testing.assert_allclose(ort_session(fresh.SerializeToString()).run(["probabilities"], {"X": x_te})[0], want,
                               atol=1e-6)
    np.testing.assert_allclose(want, pipeline.predict_proba(x_te), atol=1e-5)


def test_split_puts_the_scaler_in_the_backbone_and_the_trees_in_the_enclave(split):
    res, out = split
    ops = {n.name: (n.domain, n.op_type) for n in res.imported.nodes}
    assert [ops[n] for n in res.backbone_nodes] == [("ai.onnx.ml", "Scaler")]
    assert ("ai.onnx.ml", "TreeEnsembleClassifier") in [ops[n] for n in res.head_nodes]
    tree = next(n for n in res.head_nodes if ops[n][1] == "TreeEnsembleClassifier")
    lifted = {f"{tree}.nodes_values", f"{tree}.class_weights", f"{tree}.base_values"}
    assert lifted <= set(res.protected) and lifted <= {e.name for e in res.index.entries}
    # the graph file keeps the structure only; the numbers are in the parameter blob
    graph = decode_graph(decode_head_package((out / "head.pkg").read_bytes()).graph_bytes)
    node = next(n for n in graph.nodes if n.op == "TreeEnsembleClassifier")
    assert node.domain == "ai.onnx.ml" and graph.domains == {"ai.onnx.ml": 1}
    assert not {"nodes_values", "class_weights", "base_values"} & set(node.attrs)
    # the node's public backbone holds no tree
    backbone = onnx.load(str(out / "node" / "backbone.onnx"))
    assert [n.op_type for n in backbone.graph.node] == ["Scaler"]


def test_backbone_then_head_equals_the_whole_model_and_sklearn(split, data):
    res, out = split
    _, _, x_te, y_te = data
    assert res.verification.samples == len(x_te)
    assert res.verification.max_abs_diff_interpreter <= 1e-5
    head = HeadInterpreter(decode_head_package((out / "head.pkg").read_bytes()),
                           decode_index((out / "head.index").read_bytes()))
    mid = Backbone((out / "node" / "backbone.onnx").read_bytes()).run({"X": x_te})
    probs = head.run({t: mid[t] for t in res.crossing})["probabilities"]
    assert probs.shape == (len(x_te), 2) and head.output_policy == "label_scores"
    pipeline = trees.train()
    np.testing.assert_allclose(probs, pipeline.predict_proba(x_te), atol=1e-5)
    assert np.array_equal(np.argmax(probs, axis=1), pipeline.predict(x_te))
    assert float((np.argmax(probs, axis=1) == y_te).mean()) >= 0.93
