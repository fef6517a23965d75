"""`splitseal demo`: the whole flow on one chain, with progress output.

1. deploy the five contracts (the quoting key of this machine's enclave platform pinned);
2. split the reference digits classifier by its protection rule (proof: backbone + head = model);
3. the model owner registers the split's hashes and allows the enclave build's measurement;
4. start the enclave as its own process, attest it (quote → registry), provision head and index;
5. an inference node: NODE_ROLE, input key, backbone; serving in the background;
6. a requester sends test images as transactions and decrypts the predictions;
7. accuracy over the requests equals the plaintext model's on the same inputs;
8. the audit trail of one request, rebuilt from events and verified;
9. real pretrained models on the same system (orchestrator/demo_pretrained.py): SFace face
   embeddings on ORL faces with the sample's EER, PP-OCRv4 reading rendered text lines;
10. MPC enrolment and recognition on shares (orchestrator/demo_mpc.py); then the hybrid mode
    (orchestrator/demo_hybrid.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from splitseal.config import Config
from splitseal.errors import InvalidInputError, SplitsealError

from .stack import DEMO_MODEL, Steps, start_stack

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    chain: str
    requests: int
    completed: int
    accuracy: float
    plaintext_accuracy: float
    agreement: float
    audited_request: int
    audit_verified: bool
    latencies_ms: list[float] = field(default_factory=list)
    gas_per_request: int = 0


def run_demo(config: Config, *, chain_target: str, requests: int, state_dir: Path,
             say: Callable[[str], None] = print, mpc: bool = True, pretrained: bool = True) -> DemoResult:
    from .audit import Auditor, render_html, render_request
    from .models.backbone import Backbone
    from .training import load_split, reference_model_path

    if requests < 1:
        raise InvalidInputError("--requests must be at least 1")
    stack = start_stack(config, chain_target=chain_target, state_dir=state_dir, say=say)
    step = Steps(say, first=9)
    try:
        _, _, x_test, y_test = load_split()
        plain = Backbone(reference_model_path(DEMO_MODEL).read_bytes())
        input_name = plain.input_specs[0][0]
        n = min(requests, len(x_test))
        xs, ys = x_test[:n], y_test[:n]
        plain_pred = np.argmax(plain.run({input_name: xs})[plain.output_names[0]], axis=1)

        requester = stack.requester()
        predictions, latencies, outcomes = [], [], []
        with step(f"send {n} inference requests as transactions; the requester decrypts each result"):
            for i in range(n):
                outcome = requester.infer(stack.model_id, stack.version, xs[i], timeout=60)
                if not outcome.ok:
                    raise SplitsealError(f"request {outcome.request_id} ended {outcome.status.name}: "
                                         f"{outcome.failure_code} {outcome.failure_reason}")
                predictions.append(outcome.label)
                latencies.append(outcome.latency["end_to_end"] * 1e3)
                outcomes.append(outcome)
                if n <= 20 or (i + 1) % max(1, n // 10) == 0:
                    step.note(f"request {outcome.request_id}: predicted {outcome.label} (true {ys[i]}), "
                              f"{latencies[-1]:.1f} ms")
        requester.close()
        pred = np.asarray(predictions)
        accuracy = float(np.mean(pred == ys))
        plain_accuracy = float(np.mean(plain_pred == ys))
        agreement = float(np.mean(pred == plain_pred))
        step.note(f"accuracy {accuracy:.4f}; the plaintext model on the same inputs: {plain_accuracy:.4f}; "
                  f"identical predictions: {agreement:.0%}")
        step.note(f"latency request sent → result decrypted: p50 {np.percentile(latencies, 50):.1f} ms, "
                  f"p95 {np.percentile(latencies, 95):.1f} ms")
        if agreement != 1.0:
            raise SplitsealError("split inference disagrees with the plaintext model; the split is not exact")

        audited = outcomes[-1].request_id
        with step(f"audit request {audited} from on-chain events alone"):
            audit = Auditor(stack.chain, stack.deployment).request(audited)
        say(render_request(audit))
        if not audit.verified:
            raise SplitsealError(f"the audit of request {audited} does not verify")
        with step("audit the model's whole history; HTML report for auditors"):
            model_audit = Auditor(stack.chain, stack.deployment).model(stack.model_id)
            report = state_dir / "audit.html"
            report.write_text(render_html(model_audit))
        step.note(f"{len(model_audit.events)} model events, {len(model_audit.requests)} requests, "
                  f"{'VERIFIED' if model_audit.verified else 'NOT VERIFIED'}; report: {report}")

        if pretrained:
            from . import demo_pretrained

            if demo_pretrained.available():
                with step("real pretrained models through the chain: SFace on ORL faces, PP-OCRv4 on text lines"):
                    demo_pretrained.run(stack, say=lambda line: say(f"      {line}"))
            else:
                step.note("real pretrained models skipped: not fetched (run scripts/setup)")

        if mpc:
            from . import demo_mpc as mpc_demo

            with step("MPC feature-share nodes: enrol, verify and identify on secret shares, results on-chain"):
                mpc_demo.run(state_dir / "mpc", stack.chain, stack.deployment, parties=2,
                             echo=lambda line: say(f"      {line}"))
            from . import demo_hybrid

            with step("hybrid: MPC nodes run the backbone on shares, the enclave the head; signed on-chain"):
                demo_hybrid.run(stack, state_dir / "hybrid", say=lambda line: say(f"      {line}"))
        return DemoResult(stack.chain.name, n, len(predictions), accuracy, plain_accuracy, agreement, audited,
                          audit.verified, latencies, audit.gas_total)
    finally:
        stack.close()
