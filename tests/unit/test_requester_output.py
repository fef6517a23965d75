"""What `splitseal infer` shows of a decrypted result: every result kind (labels, scores,
features) and every batch row, in text and in --json; the requester's row-0 fields unchanged."""

from __future__ import annotations

import json

from orchestrator.cli.node import outcome_document, render_outcome
from orchestrator.requester import InferenceOutcome, _set_prediction
from splitseal.protocol import RequestStatus
from splitseal.protocol.result import decode_result, encode_result_document

SALT = bytes(16)


def _outcome(policy: str, **parts) -> InferenceOutcome:
    out = InferenceOutcome(request_id=7, status=RequestStatus.COMPLETED, enclave="0xE",
                           transactions={"result": "0x1"}, latency={"end_to_end": 0.5})
    _set_prediction(out, decode_result(encode_result_document(policy, salt=SALT, **parts)))
    return out


def test_a_batch_of_labels_and_scores_keeps_every_row():
    scores = [[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]
    out = _outcome("label_scores", labels=[1, 0, 1], scores=scores)
    assert (out.label, out.scores) == (1, [0.1, 0.9])          # row 0, as before
    assert out.labels == [1, 0, 1] and out.all_scores == scores and out.features is None
    doc = json.loads(json.dumps(outcome_document(out)))
    assert doc["rows"] == 3 and doc["labels"] == [1, 0, 1] and doc["allScores"] == scores
    assert doc["label"] == 1 and doc["scores"] == [0.1, 0.9] and doc["allFeatures"] is None
    text = render_outcome(doc)
    assert "row 2:" in text and text.count("prediction:") == 3 and "scores: 0.300 0.700" in text


def test_an_embedding_prints_its_features_not_a_missing_prediction():
    feats = [[0.5, -0.25, 1.0], [2.0, 0.0, -1.0]]
    out = _outcome("features", features=feats)
    assert out.label is None and out.labels is None
    assert out.features == feats[0] and out.all_features == feats
    doc = outcome_document(out)
    assert doc["features"] == feats[0] and doc["allFeatures"] == feats and doc["rows"] == 2
    text = render_outcome(doc)
    assert "None" not in text and "prediction" not in text
    assert "row 1:" in text and "features: 2 0 -1" in text


def test_a_single_row_label_prints_as_before():
    text = render_outcome(outcome_document(_outcome("label", labels=[4])))
    assert text.splitlines()[:2] == ["request 7: COMPLETED", "  prediction: 4"] and "row 0" not in text


def test_long_feature_vectors_are_shortened_in_text_only():
    feats = [[float(i) for i in range(40)]]
    doc = outcome_document(_outcome("features", features=feats))
    assert doc["features"] == feats[0]
    assert "(40 values)" in render_outcome(doc)


def test_a_failure_shows_no_prediction():
    out = InferenceOutcome(request_id=3, status=RequestStatus.FAILED, failure_reason="bad input",
                           transactions={"failure": "0x2"})
    doc = outcome_document(out)
    assert doc["rows"] == 0 and doc["labels"] is None
    assert "prediction" not in render_outcome(doc)


def test_a_public_label_is_shown_only_when_one_was_handed_to_the_consumer():
    out = _outcome("public_label", labels=[4])
    out.public_label = 4
    doc = json.loads(json.dumps(outcome_document(out)))
    assert doc["publicLabel"] == 4 and doc["labels"] == [4]
    assert "public label (signed, handed to the consumer): 4" in render_outcome(doc)
    plain = outcome_document(_outcome("label", labels=[4]))
    assert plain["publicLabel"] is None and "public label" not in render_outcome(plain)
