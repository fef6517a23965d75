"""The committed protection rules split the reference architectures (digits classifier and
embedding) and the split is proven equal to the whole model on the held-out digits test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enclave.interpreter import HeadInterpreter
from orchestrator.models import load_model
from orchestrator.models.backbone import Backbone
from orchestrator.models.rule import load_rule
from orchestrator.models.split import split_model
from orchestrator.training.data import load_split
from tests.support.models_fixtures import reference_like

ROOT = Path(__file__).resolve().parents[2]

# rule file -> (model kind, expected first head node, expected crossing tensor)
RULES = {
    "digits_classifier.toml": ("classifier", "neck.fc", "backbone.flatten.out"),
    "digits_classifier_deep.toml": ("classifier", "backbone.block2.conv", "backbone.block1.pool.out"),
    "digits_classifier_last_layer.toml": ("classifier", "head.fc", "neck.relu.out"),
    "digits_hybrid.toml": ("classifier", "neck.relu", "neck.fc.out"),
    "digits_embedding.toml": ("embedding", "neck.fc", "backbone.flatten.out"),
    "digits_embedding_deep.toml": ("embedding", "backbone.block2.conv", "backbone.block1.pool.out"),
}


@pytest.fixture(scope="module")
def test_images():
    return load_split()[2]


#: committed rules of other reference models, exercised by their own tests
OTHER_RULES = {"breast_cancer_gbt.toml": "tests/unit/test_models_trees.py",
               "sface_hybrid.toml": "tests/integration/test_hybrid_faces.py",
               "sface.toml": "tests/unit/test_pretrained_faces.py",
               "ppocrv4_rec.toml": "tests/unit/test_pretrained_ocr.py"}


def test_every_committed_rule_is_exercised():
    assert {p.name for p in (ROOT / "rules").glob("*.toml")} == set(RULES) | set(OTHER_RULES)
    for test in OTHER_RULES.values():
        assert (ROOT / test).is_file()


@pytest.mark.parametrize("rule_name", sorted(RULES))
def test_rule_splits_reference_architecture(rule_name, test_images):
    kind, first, crossing = RULES[rule_name]
    imp = load_model(reference_like(kind).SerializeToString())
    rule = load_rule(ROOT / "rules" / rule_name)
    res = split_model(imp, rule, test_images, sample_source="digits test split")
    assert res.head_nodes[0] == first
    assert res.crossing == [crossing]
    assert res.verification.samples == 360
    # verify_split raised unless |whole - split| <= 1e-5 + 1e-5 |whole| everywhere; here also absolute
    assert res.verification.max_abs_diff_interpreter <= 1e-5
    assert res.verification.max_abs_diff_onnxruntime <= 1e-5
    for p in res.protected:
        assert res.sides[p] == "head"
    backbone_params = {t.name for t in res.backbone_model.graph.initializer}
    assert not backbone_params & set(res.protected)
    # the engines of the two environments, chained, give the whole model's output
    mid = Backbone(res.backbone_bytes).run({"image": test_images[:5]})
    out = HeadInterpreter(res.package, res.index).run(mid)
    assert list(out) == [imp.outputs[0].name]
    assert np.all(np.isfinite(out[imp.outputs[0].name]))
