"""Real architectures exported by torch 2.13 both ways (scripts/setup_zoo), split at their natural
cuts: the split verifies (backbone + head == the whole model on onnxruntime, within the split's
tolerance), the cut is crossed by the expected number of tensors, shape arithmetic is folded away
from the head, and the enclave interpreter's head matches onnxruntime's on the same head input."""

from __future__ import annotations

import numpy as np
import pytest

from enclave.interpreter import HeadInterpreter
from orchestrator.models import load_model, zoo
from orchestrator.models.backbone import Backbone, ort_session
from orchestrator.models.rule import parse_rule
from orchestrator.models.split import TOLERANCE, random_samples, split_model
from splitseal.errors import UnsupportedOperatorError

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not zoo.available(), reason="model zoo missing: run scripts/setup_zoo")]

#: interpreter head vs onnxruntime head: |a - b| <= HEAD_TOLERANCE * (1 + |b|)
HEAD_TOLERANCE = 1e-5
SEED = 12
#: operators each family's head must contain (what the cut is meant to test)
HEAD_OPS = {"resnet18": {"Gemm"}, "mobilenet_v2": {"Gemm"}, "efficientnet_b0": {"Sigmoid", "Mul", "Gemm"},
            "squeezenet1_0": {"Conv", "Relu"}, "vit": {"LayerNormalization", "Softmax", "Erf", "MatMul"},
            "arcface": {"ReduceL2", "Div"}, "crnn_lstm": {"LSTM", "LogSoftmax"}, "crnn_gru": {"GRU", "LogSoftmax"}}
CASES = [(f, e, c) for f, cuts in zoo.CUTS.items() for e in zoo.EXPORTERS for c in cuts]
_imported: dict[tuple[str, str], object] = {}


def _load(family: str, exporter: str):
    key = (family, exporter)
    if key not in _imported:
        _imported.clear()   # one model at a time in memory
        _imported[key] = load_model(zoo.model_path(family, exporter))
    return _imported[key]


@pytest.mark.parametrize("family, exporter, cut", CASES, ids=[f"{f}-{e}-{c.name}" for f, e, c in CASES])
def test_natural_cut_splits_verifies_and_the_interpreter_matches_onnxruntime(family, exporter, cut):
    imp = _load(family, exporter)
    samples = random_samples(imp, 3, seed=SEED)
    res = split_model(imp, parse_rule(cut.rule_text(imp).encode()), samples, sample_source=f"seed {SEED}")
    v = res.verification
    assert v.samples == 3 and v.max_abs_diff_onnxruntime <= TOLERANCE and v.max_abs_diff_interpreter <= TOLERANCE
    assert len(res.crossing) == cut.crossing, res.crossing
    head_ops = {n.op for n in res.head_graph.nodes}
    assert HEAD_OPS[family] <= head_ops, head_ops
    assert not head_ops & {"Shape", "ConstantOfShape", "Slice", "Cast"}, "shape arithmetic left in the head"
    assert res.protected and set(res.protected) <= {p.name for p in res.head_graph.parameters}

    mid = Backbone(res.backbone_bytes).run(samples)
    feed = {t: mid[t] for t in res.crossing}
    names = [o.name for o in res.head_graph.outputs]
    want = ort_session(res.head_model.SerializeToString()).run(names, feed)
    got = HeadInterpreter(res.package, res.index).run(feed)
    for name, w in zip(names, want):
        g = np.asarray(got[name])
        assert g.shape == w.shape
        excess = np.abs(g - w) - HEAD_TOLERANCE * (1 + np.abs(w))
        assert excess.max() <= 0, f"{name}: interpreter differs from onnxruntime by {np.abs(g - w).max():.3g}"


@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
def test_a_time_major_cut_is_refused_at_split_naming_the_tensor(exporter):
    """Cutting between the CRNN's RNN and its fc sends a (W, N, C) sequence: refused, with the reason."""
    imp = _load("crnn_lstm", exporter)
    rule = parse_rule(b'version = 1\n[split]\nprotect_last_layers = 1\n[protect]\nparameters = ["*"]\n'
                      b'[output]\npolicy = "features"\n')
    with pytest.raises(UnsupportedOperatorError, match=r"crossing tensor '[^']+' must be float32 with static "
                                                       r"non-batch dimensions, it is float32 \[32, None, 64\]"):
        split_model(imp, rule)


def test_the_manifest_records_both_exporters_for_every_family():
    m = zoo.manifest()
    assert m["torch"].startswith("2.13") and not m["failed"]
    assert {(e["family"], e["exporter"]) for e in m["exported"]} == {(f, e) for f in zoo.CUTS for e in zoo.EXPORTERS}
