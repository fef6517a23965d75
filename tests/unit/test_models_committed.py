"""The committed reference models (models/*.onnx, trained by `splitseal model train`) split by
every committed rule, proven equal to the whole model on the held-out digits test split, with the
head on the enclave interpreter; the classifier keeps its accuracy through the split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from enclave.interpreter import HeadInterpreter
from enclave.package import decode_head_package, decode_index
from orchestrator.models import load_model
from orchestrator.models.backbone import Backbone
from orchestrator.models.rule import load_rule
from orchestrator.models.split import split_model
from orchestrator.training.data import load_split

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [(model, rule.name) for model in ("digits_classifier", "digits_embedding")
         for rule in sorted((ROOT / "rules").glob(f"{model}*.toml"))]


@pytest.fixture(scope="module")
def test_split():
    _, _, x, y = load_split()
    return x, y


def test_reference_models_are_committed():
    for name in ("digits_classifier", "digits_embedding"):
        assert (ROOT / "models" / f"{name}.onnx").is_file(), f"models/{name}.onnx is missing"
    assert len(PAIRS) >= 4


@pytest.mark.parametrize("model_name, rule_name", PAIRS, ids=[f"{m}-{r}" for m, r in PAIRS])
def test_committed_model_split_is_equivalent(model_name, rule_name, test_split, tmp_path):
    x, y = test_split
    imp = load_model(ROOT / "models" / f"{model_name}.onnx")
    res = split_model(imp, load_rule(ROOT / "rules" / rule_name), x, sample_source="digits test split")
    v = res.verification
    assert v.samples == len(x) == 360
    assert v.max_abs_diff_onnxruntime <= 1e-5 and v.max_abs_diff_interpreter <= 1e-5
    assert res.protected and all(res.sides[p] == "head" for p in res.protected)
    # round trip through the files the provisioning reads
    res.write(tmp_path)
    pkg = decode_head_package((tmp_path / "head.pkg").read_bytes())
    index = decode_index((tmp_path / "head.index").read_bytes())
    head = HeadInterpreter(pkg, index)
    mid = Backbone((tmp_path / "backbone.onnx").read_bytes()).run({"image": x})
    out = head.run(mid)[imp.outputs[0].name]
    if model_name == "digits_classifier":
        accuracy = float(np.mean(out.argmax(axis=1) == y))
        metrics = json.loads((ROOT / "models" / f"{model_name}.metrics.json").read_text())
        assert accuracy >= 0.97
        assert accuracy == metrics["metrics"]["test_accuracy"]  # the split changes no prediction
    else:
        assert out.shape == (360, 32)
