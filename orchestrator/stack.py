"""The composition root: what starts a chain, an enclave, inference nodes and requesters.

:func:`start_stack` wires a running system on one chain, in order: connect (anvil started for the
run when asked), start the enclave as its own process, deploy (the platform's quoting key pinned),
split the model by its rule, register the version, attest and provision the enclave, start an
inference node. The demo, the benchmarks and the tests all build their systems here, so there
is one place that knows how the parts fit together.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from splitseal.config import PROJECT_ROOT, Config
from splitseal.protocol.crypto import X25519KeyPair, keccak256

if TYPE_CHECKING:
    import numpy as np

    from splitseal.chain import Chain, Deployment
    from splitseal.enclave_client import EnclaveProcess

    from .node_setup import NodeWiring
    from .requester import Requester

log = logging.getLogger(__name__)

DEMO_MODEL = "digits_classifier"
DEMO_RULE = PROJECT_ROOT / "rules" / "digits_classifier.toml"


@dataclass(frozen=True)
class ServedModel:
    """A model version registered, provisioned and served on a :class:`Stack`."""

    name: str
    model_id: bytes
    version: int
    split_dir: Path


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
    #: models served besides the first (:meth:`add_model`), by name
    models: dict[str, "ServedModel"] = field(default_factory=dict)

    def requester(self, account_index: int = 3) -> "Requester":
        from .requester import Requester

        return Requester(self.chain, self.deployment, self.chain.account(account_index),
                         key=X25519KeyPair.generate(), blob_dir=self.state_dir / "blobs")

    def add_node(self, config: Config, account_index: int, *, index: int = 0, count: int = 1,
                 background: bool = True, start_block: int | None = None) -> "NodeWiring":
        """Authorize another node account and start it (in a thread when ``background``)."""
        from .models.split import NODE_DIR
        from .node_setup import authorize_node, build_node, load_or_create_x25519_key

        key = load_or_create_x25519_key(self.state_dir / "node" / "input.key")
        account = self.chain.account(account_index)
        # the stack is the one operator of its deployment: its key replaces one a previous run left
        authorize_node(self.chain, self.deployment, self.chain.account(0), account, key, rotate=True)
        node_config = replace(config, node=replace(config.node, blob_dir=str(self.state_dir / "blobs")))
        wiring = build_node(node_config, self.chain, self.deployment, account, backbone_paths=[self.split_dir / NODE_DIR],
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

    def add_model(self, name: str, model_path: Path, rule: Path, samples: "np.ndarray", *, sample_source: str,
                  say: Callable[[str], None] = print) -> "ServedModel":
        """Serve one more model on this system: split it by ``rule`` (verified on ``samples``),
        register the version, provision the head to the running enclave (already attested) and
        give every node its backbone. Returns where requests for it go."""
        from .models.split import NODE_DIR

        split_dir = self.state_dir / "models" / name
        model_id, version = install_model_version(
            Steps(say), self.chain, self.deployment, self.chain.account(1), self.state_dir / "enclave", split_dir,
            model=name, model_path=model_path, rule=rule, samples=samples, sample_source=sample_source)
        for wiring in self.nodes:
            wiring.node.backbones.add(split_dir / NODE_DIR)
        self.models[name] = ServedModel(name, model_id, version, split_dir)
        say(f"{name}: model 0x{model_id.hex()[:16]}… version {version} registered and provisioned; "
            f"the node holds its backbone")
        return self.models[name]

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
    from enclave.platform import quoting_key_address
    from splitseal.chain import connect
    from splitseal.enclave_client import EnclaveClient, EnclaveProcess

    from .deploy import ensure_deployed
    from .provision import attest_enclave

    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    enclave_dir, split_dir = state_dir / "enclave", state_dir / "split"

    step = Steps(say)
    with step("connect to the chain"):
        chain = connect(replace(config.chain, url=chain_target) if chain_target else config.chain,
                        home=config.path(""), start_anvil=True)
    enclave_proc = None
    try:
        admin, owner = chain.account(0), chain.account(1)
        step.note(f"{chain.name}, chain id {chain.chain_id}, block {chain.block_number()}")

        with step("start the enclave process"):
            enclave_proc = EnclaveProcess.start(enclave_dir, enclave_dir / "enclave.sock",
                                                log_path=state_dir / "enclave.log",
                                                extra_args=("--answer-durability", config.enclave.answer_durability))
            with EnclaveClient(enclave_dir / "enclave.sock") as probe:
                status = probe.status()
        step.note(f"pid {enclave_proc.pid}, measurement 0x{status.measurement.hex()[:16]}…, "
                  f"debug {status.debug}; its keys never leave it unsealed")

        quoting_key = quoting_key_address(enclave_dir)
        with step("deploy the contracts"):
            deployment = ensure_deployed(chain, admin, home=config.path(""), quoting_key=quoting_key,
                                         record=chain.url is not None)
            registry = deployment.model_registry
            if chain.call(registry.functions.quotingKey()) != quoting_key:
                chain.transact(registry.functions.setQuotingKey(quoting_key), sender=admin)
        for name, c in deployment.contracts().items():
            step.note(f"{name:22s} {c.address}")

        with EnclaveClient(enclave_dir / "enclave.sock") as owner_client:
            with step("attest the enclave (fresh nonce → quote → ModelRegistry.registerEnclave)"):
                registration = attest_enclave(chain, deployment, owner_client, sender=admin)
            step.note(f"enclave {registration.enclave}, registration expires at {registration.expires_at}")
        model_id, version = install_model_version(step, chain, deployment, owner, enclave_dir, split_dir,
                                                  model=model, rule=rule)

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


def install_model_version(step: "Steps", chain: "Chain", deployment: "Deployment", owner, enclave_dir: Path,
                          split_dir: Path, *, model: str, rule: Path, model_path: Path | None = None,
                          samples=None, sample_source: str = "digits test split") -> tuple[bytes, int]:
    """Split ``model`` (a reference model's name, or any ONNX file at ``model_path`` with
    ``samples`` to prove the split on) by ``rule``, register the version and provision the
    attested enclave with its head and index; returns (model id, version)."""
    from splitseal.enclave_client import EnclaveClient

    from .models import load_model
    from .models.rule import load_rule
    from .models.split import split_model
    from .provision import provision_model, register_model_version
    from .training import load_split, reference_model_path

    path = model_path if model_path is not None else reference_model_path(model)
    with step(f"split {model} by {rule.name}"):
        imported = load_model(path)
        if samples is None:
            samples = load_split()[2][:128]
        result = split_model(imported, load_rule(rule), samples, sample_source=sample_source)
        summary = result.write(split_dir, model_path=str(path), rule_path=str(rule))
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
        with step("allow its measurement; provision head package and parameter index, encrypted to it"):
            provisioned = provision_model(
                chain, deployment, owner_client, owner, model_id=model_id, version=version,
                package_bytes=(split_dir / "head.pkg").read_bytes(),
                index_bytes=(split_dir / "head.index").read_bytes(), allow_measurement=True)
        step.note(f"serving: {provisioned.serving}, sealed state version {provisioned.state_version}")
    return model_id, version


class Steps:
    """Numbered progress lines with timings."""

    def __init__(self, say: Callable[[str], None], first: int = 1) -> None:
        self.say = say
        self.n = first - 1

    def __call__(self, title: str) -> "Step":
        self.n += 1
        return Step(self, f"[{self.n}] {title}")

    def note(self, text: str) -> None:
        self.say(f"      {text}")


class Step:
    def __init__(self, steps: Steps, title: str) -> None:
        self.steps, self.title = steps, title

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()
        self.steps.say(f"{self.title} …")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.steps.say(f"      done in {time.perf_counter() - self.t0:.2f} s")
