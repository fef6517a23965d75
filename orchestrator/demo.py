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
from typing import TYPE_CHECKING, Callable

import numpy as np

from splitseal.protocol.crypto import X25519KeyPair, keccak256
from splitseal.config import PROJECT_ROOT, Config
from splitseal.errors import SplitsealError

if TYPE_CHECKING:
    from splitseal.chain.client import Chain
    from splitseal.chain.deployment import Deployment
    from splitseal.enclave_client import EnclaveProcess
    from .node_setup import NodeWiring
    from .requester import Requester

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


@dataclass
class Stack:
    """A running system on one chain: contracts, a provisioned enclave, inference node(s)."""

    chain: "Chain"
    deployment: "Deployment"
    model_id: bytes
    version: int
    split_dir: Path
    state_dir: Path
    enclave_proc: "EnclaveProcess"
    nodes: list["NodeWiring"] = field(default_factory=list)
    runners: list[threading.Thread] = field(default_factory=list)

    def requester(self, account_index: int = 3) -> "Requester":
        from .requester import Requester

        return Requester(self.chain, self.deployment, self.chain.account(account_index),
                         key=X25519KeyPair.generate(), blob_dir=self.state_dir / "blobs")

    def add_node(self, config: Config, account_index: int, *, index: int = 0, count: int = 1,
                 background: bool = True, start_block: int | None = None) -> "NodeWiring":
        """Authorize another node account and start it (in a thread when ``background``)."""
        from dataclasses import replace

        from .node_setup import authorize_node, build_node, load_or_create_x25519_key

        key = load_or_create_x25519_key(self.state_dir / "node" / "input.key")
        account = self.chain.account(account_index)
        authorize_node(self.chain, self.deployment, self.chain.account(0), account, key)
        node_config = replace(config, node=replace(config.node, blob_dir=str(self.state_dir / "blobs")))
        wiring = build_node(node_config, self.chain, self.deployment, account, backbone_paths=[self.split_dir],
                            socket_path=self.state_dir / "enclave" / "enclave.sock",
                            state_dir=self.state_dir / f"node-{len(self.nodes)}", node_index=index,
                            node_count=count, input_key=key, start_block=start_block)
        self.nodes.append(wiring)
        if background:
            runner = threading.Thread(target=lambda: wiring.node.setup().run(install_signal_handlers=False),
                                      name=f"inference-node-{len(self.nodes)}", daemon=True)
            runner.start()
            self.runners.append(runner)
        return wiring

    def stop_nodes(self) -> None:
        for wiring in self.nodes:
            wiring.node.stop()
        for runner in self.runners:
            runner.join(timeout=10)
        for wiring in self.nodes:
            wiring.node.close()
            wiring.client.close()
        self.nodes.clear()
        self.runners.clear()

    def close(self) -> None:
        self.stop_nodes()
        self.enclave_proc.stop()
        self.chain.close()


def start_stack(config: Config, *, chain_target: str, state_dir: Path, say: Callable[[str], None] = print,
                model: str = DEMO_MODEL, rule: Path = DEMO_RULE, node: bool = True) -> Stack:
    """Steps 1–5 of the module doc: a system ready to serve requests."""
    from dataclasses import replace

    from enclave.platform import quoting_key_address

    from splitseal.chain.client import connect
    from .deploy import ensure_deployed
    from splitseal.enclave_client import EnclaveClient, EnclaveProcess
    from .models.onnx_import import load_model
    from .models.rule import load_rule
    from .models.split import split_model
    from .provision import attest_enclave, provision_model, register_model_version
    from .training import load_split, reference_model_path

    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    enclave_dir, split_dir = state_dir / "enclave", state_dir / "split"

    step = _Steps(say)
    with step("connect to the chain"):
        chain = connect(replace(config.chain, url=chain_target) if chain_target else config.chain,
                        home=config.path(""), start_anvil=True)
    enclave_proc = None
    try:
        admin, owner = chain.account(0), chain.account(1)
        step.note(f"{chain.name}, chain id {chain.chain_id}, block {chain.block_number()}")

        with step("start the enclave process"):
            enclave_proc = EnclaveProcess.start(enclave_dir, enclave_dir / "enclave.sock",
                                                log_path=state_dir / "enclave.log")
            with EnclaveClient(enclave_dir / "enclave.sock") as probe:
                status = probe.status()
        step.note(f"pid {enclave_proc.pid}, measurement 0x{status.measurement.hex()[:16]}…, "
                  f"debug {status.debug}; its keys never leave it unsealed")

        quoting_key = quoting_key_address(enclave_dir)
        with step("deploy the contracts"):
            deployment = ensure_deployed(chain, admin, home=config.path(""), quoting_key=quoting_key,
                                         record=not chain.embedded)
            registry = deployment.model_registry
            if chain.call(registry.functions.quotingKey()) != quoting_key:
                chain.transact(registry.functions.setQuotingKey(quoting_key), sender=admin)
        for name, c in deployment.contracts().items():
            step.note(f"{name:22s} {c.address}")

        with step(f"split {model} by {rule.name}"):
            imported = load_model(reference_model_path(model))
            _, _, x_test, _ = load_split()
            result = split_model(imported, load_rule(rule), x_test[:128], sample_source="digits test split")
            summary = result.write(split_dir, model_path=str(reference_model_path(model)), rule_path=str(rule))
        v = result.verification
        step.note(f"backbone + head equals the whole model on {v.samples} test images: max difference "
                  f"{v.max_abs_diff_interpreter:.1e} with the enclave's interpreter, "
                  f"{v.max_abs_diff_onnxruntime:.1e} on onnxruntime (tolerance {v.tolerance:.0e})")

        # one model id per owner: on a chain that outlives the demo, each run adds a version
        model_id = keccak256(f"splitseal-demo/{model}/{owner.address}".encode())
        with step("register the model version (hashes of backbone, head graph, head parameters, rule)"):
            version = register_model_version(chain, deployment, owner, model_id, split_dir, summary)
        step.note(f"model 0x{model_id.hex()[:16]}… version {version}")

        with EnclaveClient(enclave_dir / "enclave.sock") as owner_client:
            with step("attest the enclave (fresh nonce → quote → ModelRegistry.registerEnclave)"):
                registration = attest_enclave(chain, deployment, owner_client, sender=admin)
            step.note(f"enclave {registration.enclave}, registration expires at {registration.expires_at}")

            with step("allow its measurement; provision head package and parameter index, encrypted to it"):
                provisioned = provision_model(
                    chain, deployment, owner_client, owner, model_id=model_id, version=version,
                    package_bytes=(split_dir / "head.pkg").read_bytes(),
                    index_bytes=(split_dir / "head.index").read_bytes(), allow_measurement=True)
            step.note(f"serving: {provisioned.serving}, sealed state version {provisioned.state_version}")

        stack = Stack(chain, deployment, model_id, version, split_dir, state_dir, enclave_proc)
        if node:
            with step("start the inference node (NODE_ROLE, input key, backbone)"):
                stack.add_node(config, account_index=2)
        return stack
    except BaseException:
        if enclave_proc is not None:
            enclave_proc.stop()
        chain.close()
        raise


def run_demo(config: Config, *, chain_target: str, requests: int, state_dir: Path,
             say: Callable[[str], None] = print, mpc: bool = True) -> DemoResult:
    from .audit import Auditor, render_html, render_request
    from .models.backbone import Backbone
    from .training import load_split, reference_model_path

    if requests < 1:
        raise SplitsealError("--requests must be at least 1")
    stack = start_stack(config, chain_target=chain_target, state_dir=state_dir, say=say)
    step = _Steps(say, first=9)
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

        if mpc:
            from mpc.client import demo as mpc_demo

            with step("MPC feature-share nodes: enrol, verify and identify on secret shares, results on-chain"):
                mpc_demo.run(state_dir / "mpc", stack.chain, stack.deployment, parties=2,
                             echo=lambda line: say(f"      {line}"))
        return DemoResult(stack.chain.name, n, len(predictions), accuracy, plain_accuracy, agreement, audited,
                          audit.verified, latencies, audit.gas_total)
    finally:
        stack.close()


class _Steps:
    """Numbered progress lines with timings."""

    def __init__(self, say: Callable[[str], None], first: int = 1) -> None:
        self.say = say
        self.n = first - 1

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
