"""`splitseal demo`: the whole flow on one chain, with progress output.

1. deploy the five contracts (the quoting key of this machine's enclave platform pinned);
2. split the reference digits classifier by its protection rule (proof: backbone + head = model);
3. the model owner registers the split's hashes and allows the enclave build's measurement;
4. start the enclave as its own process, attest it (quote → registry), provision head and index;
5. an inference node: NODE_ROLE, input key, backbone; serving in the background;
6. a requester sends test images as transactions and decrypts the predictions;
7. accuracy over the requests equals the plaintext model's on the same inputs;
8. the audit trail of one request, rebuilt from events and verified.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from enclave.crypto import X25519KeyPair, keccak256
from splitseal.config import PROJECT_ROOT, ChainConfig, Config
from splitseal.errors import SplitsealError

log = logging.getLogger(__name__)

DEMO_MODEL = "digits_classifier"
DEMO_RULE = PROJECT_ROOT / "rules" / "digits_classifier.toml"


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
             say: Callable[[str], None] = print) -> DemoResult:
    from dataclasses import replace

    from .audit import Auditor, render_request
    from .chain import connect
    from .deploy import ensure_deployed
    from .enclave_client import EnclaveClient, EnclaveProcess
    from .models.backbone import Backbone
    from .models.onnx_import import load_model
    from .models.rule import load_rule
    from .models.split import split_model
    from .node_setup import authorize_node, build_node, load_or_create_x25519_key
    from .provision import attest_enclave, provision_model, register_model_version
    from .requester import Requester
    from .training import load_split, reference_model_path
    from enclave.platform import quoting_key_address

    if requests < 1:
        raise SplitsealError("--requests must be at least 1")
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    enclave_dir, split_dir, node_dir = state_dir / "enclave", state_dir / "split", state_dir / "node"

    step = _Steps(say)
    with step("connect to the chain"):
        chain = connect(replace(config.chain, url=chain_target) if chain_target else config.chain)
    enclave_proc = None
    wiring = None
    runner = None
    try:
        admin, owner, node_account, requester_account = chain.accounts[:4]
        step.note(f"{chain.name}, chain id {chain.chain_id}, block {chain.block_number()}")

        with step("start the enclave process"):
            enclave_proc = EnclaveProcess.start(enclave_dir, enclave_dir / "enclave.sock",
                                                log_path=state_dir / "enclave.log")
            owner_client = EnclaveClient(enclave_dir / "enclave.sock")
            status = owner_client.status()
        step.note(f"pid {enclave_proc.pid}, measurement 0x{status.measurement.hex()[:16]}…, "
                  f"debug {status.debug}, key never leaves it unsealed")

        quoting_key = quoting_key_address(enclave_dir)
        with step("deploy the contracts"):
            deployment = ensure_deployed(chain, admin, quoting_key=quoting_key, record=not chain.embedded)
            registry = deployment.model_registry
            if chain.call(registry.functions.quotingKey()) != quoting_key:
                chain.transact(registry.functions.setQuotingKey(quoting_key), sender=admin)
        for name, c in deployment.contracts().items():
            step.note(f"{name:22s} {c.address}")

        with step(f"split {DEMO_MODEL} by {DEMO_RULE.name}"):
            imported = load_model(reference_model_path(DEMO_MODEL))
            _, _, x_test, y_test = load_split()
            result = split_model(imported, load_rule(DEMO_RULE), x_test[:128], sample_source="digits test split")
            summary = result.write(split_dir, model_path=str(reference_model_path(DEMO_MODEL)),
                                   rule_path=str(DEMO_RULE))
        v = result.verification
        step.note(f"backbone + head equals the whole model on {v.samples} test images: max difference "
                  f"{v.max_abs_diff_interpreter:.1e} with the enclave's interpreter, "
                  f"{v.max_abs_diff_onnxruntime:.1e} on onnxruntime (tolerance {v.tolerance:.0e})")

        model_id = keccak256(f"splitseal-demo/{DEMO_MODEL}".encode())
        with step("register the model version and allow the enclave's measurement"):
            version = register_model_version(chain, deployment, owner, model_id, split_dir, summary)
        step.note(f"model 0x{model_id.hex()[:16]}… version {version}")

        with step("attest the enclave (fresh nonce → quote → ModelRegistry.registerEnclave)"):
            registration = attest_enclave(chain, deployment, owner_client, sender=admin)
        step.note(f"enclave {registration.enclave}, registration expires at {registration.expires_at}")

        with step("provision the head package and the parameter index (encrypted to the enclave)"):
            provisioned = provision_model(
                chain, deployment, owner_client, owner, model_id=model_id, version=version,
                package_bytes=(split_dir / "head.pkg").read_bytes(),
                index_bytes=(split_dir / "head.index").read_bytes(), allow_measurement=True)
        step.note(f"serving: {provisioned.serving}, sealed state version {provisioned.state_version}")

        with step("start the inference node"):
            authorize_node(chain, deployment, admin, node_account,
                           load_or_create_x25519_key(node_dir / "input.key"))
            node_config = replace(config, node=replace(config.node, blob_dir=str(state_dir / "blobs")))
            ws_url = None
            if not chain.embedded and chain.name == "anvil":
                from .anvil import running_node

                node_proc = running_node()
                ws_url = node_proc.ws_url if node_proc else None
            wiring = build_node(node_config, chain, deployment, node_account, backbone_paths=[split_dir],
                                socket_path=enclave_dir / "enclave.sock", state_dir=node_dir, ws_url=ws_url)
            runner = threading.Thread(target=lambda: wiring.node.setup().run(install_signal_handlers=False),
                                      name="inference-node", daemon=True)
            runner.start()

        plain = Backbone(reference_model_path(DEMO_MODEL).read_bytes())
        input_name = plain.input_specs[0][0]
        n = min(requests, len(x_test))
        xs, ys = x_test[:n], y_test[:n]
        plain_pred = np.argmax(plain.run({input_name: xs})[plain.output_names[0]], axis=1)

        requester = Requester(chain, deployment, requester_account, key=X25519KeyPair.generate(),
                              blob_dir=state_dir / "blobs")
        predictions, latencies, outcomes = [], [], []
        with step(f"send {n} inference requests as transactions and decrypt the results"):
            for i in range(n):
                outcome = requester.infer(model_id, version, xs[i], timeout=60)
                if not outcome.ok:
                    raise SplitsealError(f"request {outcome.request_id} ended {outcome.status.name}: "
                                         f"{outcome.failure_code} {outcome.failure_reason}")
                predictions.append(outcome.label)
                latencies.append(outcome.latency["end_to_end"] * 1e3)
                outcomes.append(outcome)
                if n <= 20 or (i + 1) % max(1, n // 10) == 0:
                    step.note(f"request {outcome.request_id}: predicted {outcome.label} (true {ys[i]}), "
                              f"{latencies[-1]:.1f} ms")
        pred = np.asarray(predictions)
        accuracy = float(np.mean(pred == ys))
        plain_accuracy = float(np.mean(plain_pred == ys))
        agreement = float(np.mean(pred == plain_pred))
        step.note(f"accuracy {accuracy:.4f} (plaintext model on the same inputs: {plain_accuracy:.4f}; "
                  f"identical predictions: {agreement:.0%}); latency p50 {np.percentile(latencies, 50):.1f} ms, "
                  f"p95 {np.percentile(latencies, 95):.1f} ms")
        if agreement != 1.0:
            raise SplitsealError("split inference disagrees with the plaintext model; the split is not exact")

        audited = outcomes[-1].request_id
        with step(f"audit request {audited} from events alone"):
            audit = Auditor(chain, deployment).request(audited)
        say(render_request(audit))
        if not audit.verified:
            raise SplitsealError(f"the audit of request {audited} does not verify")
        return DemoResult(chain.name, n, len(predictions), accuracy, plain_accuracy, agreement, audited,
                          audit.verified, latencies, audit.gas_total)
    finally:
        if wiring is not None:
            wiring.node.stop()
            if runner is not None:
                runner.join(timeout=10)
            wiring.node.close()
            wiring.client.close()
        if enclave_proc is not None:
            enclave_proc.stop()
        chain.close()


class _Steps:
    """Numbered progress lines with timings."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.n = 0

    def __call__(self, title: str) -> "_Step":
        self.n += 1
        return _Step(self, f"[{self.n}] {title}")

    def note(self, text: str) -> None:
        self.say(f"      {text}")


class _Step:
    def __init__(self, steps: _Steps, title: str) -> None:
        self.steps, self.title = steps, title

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()
        self.steps.say(f"{self.title} …")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.steps.say(f"      done in {time.perf_counter() - self.t0:.2f} s")
