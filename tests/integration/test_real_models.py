"""Real pretrained models through the chain, short version (the full sets: scripts/eval_real_models).

On one system (embedded chain, enclave process, inference node): SFace + L2 normalize split by
rules/sface.toml serves the embeddings of 12 ORL faces (3 subjects x 4, YuNet-aligned as the MPC
terminal does; requests of 1 and of 4 faces), and PP-OCRv4 split by rules/ppocrv4_rec.toml reads
6 rendered text lines (requests of 1 and of 2 lines), each request a transaction, each result
signed by the enclave and decrypted by the requester. Through the chain equals plaintext: the
same EER and rank-1 (embeddings within 1e-5), the very same text read, the same character
accuracy.
"""

from __future__ import annotations

import pytest

from mpc.client import faces as mpc_faces
from orchestrator.pretrained import evaluate, faces, ocr
from orchestrator.stack import start_stack
from splitseal.config import Config

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not (mpc_faces.available() and ocr.available()),
                                 reason="real models missing: run scripts/setup")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("real-models")
    stack = start_stack(Config(home=str(home)), chain_target="embedded", state_dir=home / "state", say=lambda _: None)
    yield stack
    stack.close()


def test_sface_embeddings_through_the_chain_verify_as_plaintext(stack):
    x, labels, aligned = faces.orl_inputs(subjects=3, per_subject=4)
    served = evaluate.serve_sface(stack, x, say=lambda _: None)
    single = evaluate.evaluate_faces(stack, served, x[::3], labels[::3], aligned=4, batch=1, say=lambda _: None)
    assert single.requests == 4 and single.max_abs_diff < 1e-5
    ev = evaluate.evaluate_faces(stack, served, x, labels, aligned=aligned, batch=4, say=lambda _: None)
    assert ev.requests == 3 and ev.faces == 12 and ev.subjects == 3 and ev.aligned == 12
    assert ev.max_abs_diff < 1e-5
    assert ev.split_eer == ev.plaintext_eer and ev.split_rank1 == ev.plaintext_rank1
    assert ev.plaintext_eer < 0.1  # SFace separates these people (measured 0 on this sample)


def test_ppocrv4_reads_rendered_lines_through_the_chain_as_plaintext(stack):
    served = evaluate.serve_ocr(stack, say=lambda _: None)
    texts = list(ocr.SAMPLE_LINES[:6])
    one = evaluate.evaluate_ocr(stack, served, texts[:2], batch=1, say=lambda _: None)
    assert one.requests == 2 and one.identical
    ev = evaluate.evaluate_ocr(stack, served, texts, batch=2, say=lambda _: None)
    assert ev.requests == 3 and ev.lines == 6
    assert ev.split_reads == ev.plaintext_reads and ev.split_accuracy == ev.plaintext_accuracy
    assert ev.split_accuracy > 0.9 and ev.split_reads[0] == "splitseal 2026"
