"""The real models through the chain next to plaintext, on a running :class:`~orchestrator.stack.Stack`.

Each evaluation serves the model (split by its rule, registered, provisioned to the attested
enclave, backbone given to the node), sends the inputs as inference transactions (``batch`` rows
per request), decrypts every result as the requester and compares it with the whole model on
onnxruntime over the same inputs:

- faces: EER over every pair and rank-1 identification (first image of each subject enrolled),
  from the embeddings delivered through the chain and from plaintext SFace + L2 normalize;
- OCR: character accuracy of the lines read through the chain (character indices decoded by the
  requester) and of plaintext PP-OCRv4 with the same greedy decoding.

The demo, ``scripts/eval_real_models`` and the integration tests all call these functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from splitseal.errors import SplitsealError

from . import faces, ocr

if TYPE_CHECKING:
    from orchestrator.stack import ServedModel, Stack


@dataclass
class FaceEvaluation:
    faces: int
    subjects: int
    aligned: int
    requests: int
    plaintext_eer: float
    split_eer: float
    plaintext_rank1: float
    split_rank1: float
    #: largest |embedding through the chain - plaintext embedding| over every face and dimension
    max_abs_diff: float
    latencies_ms: list[float] = field(default_factory=list)
    #: the most gas any one request's transactions used together
    gas_per_request: int = 0


@dataclass
class OcrEvaluation:
    lines: int
    requests: int
    truths: list[str]
    plaintext_reads: list[str]
    split_reads: list[str]
    plaintext_accuracy: float
    split_accuracy: float
    latencies_ms: list[float] = field(default_factory=list)
    #: the most gas any one request's transactions used together
    gas_per_request: int = 0

    @property
    def identical(self) -> bool:
        return self.plaintext_reads == self.split_reads


def serve_sface(stack: "Stack", samples: np.ndarray, say: Callable[[str], None] = print) -> "ServedModel":
    """SFace + L2 normalize split by ``rules/sface.toml`` and served (verified on ``samples``)."""
    return stack.add_model("sface", faces.prepare(), faces.RULE, samples[:4], sample_source="ORL faces", say=say)


def serve_ocr(stack: "Stack", say: Callable[[str], None] = print) -> "ServedModel":
    """PP-OCRv4 split by ``rules/ppocrv4_rec.toml`` and served (verified on rendered lines)."""
    return stack.add_model("ppocrv4_rec", ocr.model_path(ocr.fetch()), ocr.RULE, ocr.line_inputs(ocr.SAMPLE_LINES[:4]),
                           sample_source="rendered text lines", say=say)


def _send(stack: "Stack", served: "ServedModel", x: np.ndarray, batch: int, timeout: float,
          say: Callable[[str], None], what: str) -> tuple[list, list[float], int]:
    requester = stack.requester()
    outcomes, latencies, gas = [], [], 0
    try:
        for i in range(0, len(x), batch):
            outcome = requester.infer(served.model_id, served.version, x[i:i + batch], timeout=timeout)
            if not outcome.ok:
                raise SplitsealError(f"{what}: request {outcome.request_id} ended {outcome.status.name}: "
                                     f"{outcome.failure_code} {outcome.failure_reason}")
            outcomes.append(outcome)
            latencies.append(outcome.latency["end_to_end"] * 1e3)
            # the request's whole lifecycle on-chain: request, transfer, result delivery
            gas = max(gas, sum(int(stack.chain.receipt(tx)["gasUsed"]) for tx in set(outcome.transactions.values())))
            done = min(i + batch, len(x))
            if done == len(x) or len(outcomes) % 10 == 0:
                say(f"{what}: {done}/{len(x)} through the chain, request {outcome.request_id}, "
                    f"{latencies[-1]:.0f} ms")
    finally:
        requester.close()
    return outcomes, latencies, gas


def evaluate_faces(stack: "Stack", served: "ServedModel", x: np.ndarray, labels: Sequence[str], *, aligned: int,
                   batch: int = 1, timeout: float = 120.0, say: Callable[[str], None] = print) -> FaceEvaluation:
    """Embeddings of ``x`` through the chain and in plaintext; EER and rank-1 of both."""
    outcomes, latencies, gas = _send(stack, served, x, batch, timeout, say, "faces")
    through = np.asarray([row for o in outcomes for row in o.all_features], dtype=np.float32)
    plain = faces.PlainModel()(x)
    labels = list(labels)
    return FaceEvaluation(
        faces=len(x), subjects=len(set(labels)), aligned=aligned, requests=len(outcomes),
        plaintext_eer=faces.eer(plain, labels)[0], split_eer=faces.eer(through, labels)[0],
        plaintext_rank1=faces.identification_accuracy(plain, labels),
        split_rank1=faces.identification_accuracy(through, labels),
        max_abs_diff=float(np.abs(through - plain).max()), latencies_ms=latencies, gas_per_request=gas)


def evaluate_ocr(stack: "Stack", served: "ServedModel", texts: Sequence[str], *, batch: int = 1,
                 timeout: float = 120.0, say: Callable[[str], None] = print) -> OcrEvaluation:
    """``texts`` rendered, read through the chain and in plaintext; character accuracy of both.

    The requester decodes with the character list of the backbone it was given (the model's
    metadata travels with the public half), as ``splitseal infer`` does."""
    from orchestrator.models.split import NODE_DIR

    texts = list(texts)
    x = ocr.line_inputs(texts)
    outcomes, latencies, gas = _send(stack, served, x, batch, timeout, say, "text lines")
    characters = ocr.character_list(served.split_dir / NODE_DIR / "backbone.onnx")
    split_reads = [ocr.read_line(seq, characters) for o in outcomes for seq in o.sequences]
    plain_reads = ocr.PlainRecognizer().read(x)
    return OcrEvaluation(
        lines=len(texts), requests=len(outcomes), truths=texts, plaintext_reads=plain_reads, split_reads=split_reads,
        plaintext_accuracy=ocr.character_accuracy(texts, plain_reads),
        split_accuracy=ocr.character_accuracy(texts, split_reads), latencies_ms=latencies, gas_per_request=gas)
