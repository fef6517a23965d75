"""Shared pieces of the enclave integration tests: a model with canary head weights, a running
enclave process registered and provisioned on the embedded chain, one request's round trip,
and the haystack scanners used by the leak tests."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from enclave.platform import SimulatedPlatform
from orchestrator.models import load_model
from orchestrator.models.rule import parse_rule
from orchestrator.models.split import split_model
from splitseal import protocol
from splitseal.enclave_client import EnclaveClient, EnclaveProcess, InferenceReply
from splitseal.protocol import crypto
from splitseal.protocol.result import open_result

RULE = b'version=1\n[split]\nat_node="head_fc"\n[protect]\nparameters=["head.*"]\n[output]\npolicy="label_scores"\n'
#: The same split under the ``public_label`` output policy (the label is also signed in plaintext).
PUBLIC_LABEL_RULE = RULE.replace(b'policy="label_scores"', b'policy="public_label"')
IN_FEATURES, HIDDEN, CLASSES = 16, 12, 4


def canary_weights(seed: int = 7) -> np.ndarray:
    """Head weights whose bytes are distinctive: three random capital letters and a sign/exponent
    byte (0x3E or 0xBE) per float32, i.e. values of magnitude 0.13..0.25."""
    rng = np.random.default_rng(seed)
    raw = bytearray()
    for _ in range(CLASSES * HIDDEN):
        raw += bytes(rng.integers(ord("A"), ord("Z") + 1, size=3).tolist()) + bytes([0x3E if rng.random() < 0.5 else 0xBE])
    return np.frombuffer(bytes(raw), dtype="<f4").reshape(CLASSES, HIDDEN).copy()


def canary_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((HIDDEN, IN_FEATURES)) * 0.5).astype(np.float32), "bb.weight"),
             numpy_helper.from_array((rng.standard_normal(HIDDEN) * 0.1).astype(np.float32), "bb.bias"),
             numpy_helper.from_array(canary_weights(), "head.weight"),
             numpy_helper.from_array(np.array([0.05, -0.02, 0.01, 0.0], np.float32), "head.bias")]
    nodes = [helper.make_node("Gemm", ["x", "bb.weight", "bb.bias"], ["h0"], name="bb_fc", transB=1),
             helper.make_node("Relu", ["h0"], ["h"], name="bb_relu"),
             helper.make_node("Gemm", ["h", "head.weight", "head.bias"], ["logits"], name="head_fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "canary", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", IN_FEATURES])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", CLASSES])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def canary_chunks(size: int = 16) -> list[bytes]:
    """Aligned slices of the canary weights: any of them showing up anywhere is a leak."""
    raw = canary_weights().tobytes()
    return [raw[i:i + size] for i in range(0, len(raw) - size + 1, size)]


def find_leaks(needles: Iterable[bytes], haystack: bytes) -> list[str]:
    """Which needles occur in ``haystack``, raw or as hex (what a log or JSON would carry)."""
    lowered = haystack.lower()
    found = []
    for needle in needles:
        if needle in haystack or needle.hex().encode() in lowered:
            found.append(needle.hex()[:16])
    return found


def object_bytes(obj: Any, _seen: set[int] | None = None, _depth: int = 0) -> bytes:
    """Every bytes/str/ndarray reachable from ``obj`` through attributes and containers: a dump
    of a process's own objects, as far as Python can see them."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen or _depth > 12:
        return b""
    seen.add(id(obj))
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace")
    if isinstance(obj, np.ndarray):
        return obj.tobytes()
    if isinstance(obj, (int, float, bool)) or obj is None:
        return b""
    parts: list[bytes] = []
    if isinstance(obj, dict):
        items: Iterable[Any] = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = list(obj)
    elif dataclasses.is_dataclass(obj):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        items = []
    for item in items:
        parts.append(object_bytes(item, seen, _depth + 1))
    return b"\x00".join(parts)


def chain_bytes(chain: Any, from_block: int = 0) -> bytes:
    """All transaction inputs and log data/topics on the chain."""
    parts = []
    for number in range(from_block, chain.block_number() + 1):
        block = chain.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            parts.append(bytes(tx["input"] if "input" in tx else tx["data"]))
            receipt = chain.receipt(tx["hash"])
            for log in receipt["logs"]:
                parts.append(bytes(log["data"]))
                parts.extend(bytes(t) for t in log["topics"])
    return b"\x00".join(parts)


def files_bytes(root: Path, *, skip_suffixes: tuple[str, ...] = (), skip_dirs: tuple[Path, ...] = ()) -> bytes:
    parts = []
    for path in sorted(root.rglob("*")):
        if any(d in path.parents for d in skip_dirs):
            continue
        if path.is_file() and not path.name.endswith(skip_suffixes):
            parts.append(path.read_bytes())
    return b"\x00".join(parts)


# --- the world: chain + enclave process + provisioned canary model -----------------------------

@dataclass
class World:
    chain: Any
    deployment: Any
    base: Path
    split_dir: Path
    state_dir: Path
    socket_path: Path
    log_path: Path
    process: EnclaveProcess
    client: EnclaveClient
    model_id: bytes
    version: int
    enclave: str
    encryption_key: bytes
    admin: Any
    owner: Any
    node: Any
    requester: Any
    start_block: int
    full_model: bytes
    backbone: bytes
    replies: list[Any] = field(default_factory=list)

    def run_full_model(self, x: np.ndarray) -> np.ndarray:
        sess = ort.InferenceSession(self.full_model, providers=["CPUExecutionProvider"])
        return sess.run(["probs"], {"x": x})[0]

    def run_backbone(self, x: np.ndarray) -> np.ndarray:
        sess = ort.InferenceSession(self.backbone, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in sess.get_outputs()]
        return sess.run(outputs, {"x": x})[0]


def write_split(out_dir: Path, rule: bytes = RULE) -> dict[str, Any]:
    model = canary_model()
    result = split_model(load_model(model.SerializeToString()), parse_rule(rule))
    return result.write(out_dir)


def start_enclave(base: Path, name: str, *extra: str, platform_dir: Path | None = None,
                  socket_path: Path | None = None) -> tuple[EnclaveProcess, Path, Path]:
    state = base / name
    sock = socket_path or base / f"{name}.sock"
    log = base / f"{name}.log"
    args = ["--log-level", "DEBUG", *extra]
    if platform_dir is not None:
        args += ["--platform-dir", str(platform_dir)]
    return EnclaveProcess.start(state, sock, log_path=log, extra_args=args), state, sock


def build_world(chain: Any, deployment: Any, base: Path, *, enclave_args: Iterable[str] = (),
                socket_in_state_dir: bool = False) -> World:
    from orchestrator.provision import attest_enclave, provision_model, register_model_version

    admin, owner, node, requester = chain.accounts[0], chain.accounts[1], chain.accounts[2], chain.accounts[3]
    start_block = chain.block_number()
    split_dir = base / "owner-split"
    summary = write_split(split_dir)
    # the platform is shared by every enclave of these tests (one "machine")
    platform_dir = base / "platform"
    quoting = SimulatedPlatform(platform_dir).quoting_address()
    chain.transact(deployment.model_registry.functions.setQuotingKey(quoting), sender=admin)
    chain.transact(deployment.backbone_execution.functions.grantRole(protocol.NODE_ROLE, node.address), sender=admin)
    process, state_dir, sock = start_enclave(
        base, "enclave", *enclave_args, platform_dir=platform_dir,
        socket_path=base / "enclave" / "enclave.sock" if socket_in_state_dir else None)
    client = EnclaveClient(sock, trace=True)
    model_id = crypto.keccak256(b"canary-model")
    version = register_model_version(chain, deployment, owner, model_id, split_dir, summary)
    reg = attest_enclave(chain, deployment, client, sender=admin)
    provision_model(chain, deployment, client, owner, model_id=model_id, version=version,
                    package_bytes=(split_dir / "head.pkg").read_bytes(),
                    index_bytes=(split_dir / "head.index").read_bytes(), allow_measurement=True)
    # the node's copy of the public backbone lives apart from the owner's split directory
    node_dir = base / "node"
    node_dir.mkdir()
    shutil.copy(split_dir / "backbone.onnx", node_dir / "backbone.onnx")
    return World(chain=chain, deployment=deployment, base=base, split_dir=split_dir, state_dir=state_dir,
                 socket_path=sock, log_path=base / "enclave.log", process=process, client=client,
                 model_id=model_id, version=version, enclave=reg.enclave, encryption_key=reg.encryption_key,
                 admin=admin, owner=owner, node=node, requester=requester, start_block=start_block,
                 full_model=canary_model().SerializeToString(),
                 backbone=(node_dir / "backbone.onnx").read_bytes())


@dataclass
class RequestRun:
    request_id: int
    x: np.ndarray
    features: np.ndarray
    transfer: bytes
    shape: tuple[int, ...]
    dtype: str
    input_commitment: bytes
    requester_key: crypto.X25519KeyPair
    reply: InferenceReply | None = None


def open_request(w: World, x: np.ndarray, *, client: EnclaveClient | None = None) -> RequestRun:
    """Requester asks on-chain; the node runs the backbone, encrypts the transfer, records it."""
    chain, dep = w.chain, w.deployment
    requester_key = crypto.X25519KeyPair.generate()
    node_input_key = crypto.X25519KeyPair.generate()
    plain_input = x.astype("<f4").tobytes()
    input_commitment = crypto.keccak256(plain_input + b"salt")
    rk = crypto.request_key_hash(w.model_id, w.version, requester_key.public)
    inline = crypto.ecies_encrypt(node_input_key.public, plain_input, crypto.input_aad(rk))
    receipt = chain.transact(dep.backbone_execution.functions.requestInference(
        w.model_id, w.version, input_commitment, inline, "", requester_key.public, 3600), sender=w.requester)
    request_id = int(chain.events(receipt, dep.backbone_execution, "InferenceRequested")[0]["requestId"])
    features = w.run_backbone(x)
    transfer, shape, dtype = crypto.encrypt_transfer(w.encryption_key, w.enclave, request_id, w.model_id,
                                                     w.version, features)
    chain.transact(dep.backbone_execution.functions.recordBackboneOutput(
        request_id, crypto.keccak256(features.tobytes()), w.enclave, crypto.keccak256(transfer)), sender=w.node)
    return RequestRun(request_id, x, features, transfer, shape, dtype, input_commitment, requester_key)


def infer(w: World, run: RequestRun, client: EnclaveClient | None = None, **overrides: Any) -> InferenceReply:
    args = dict(request_id=run.request_id, model_id=w.model_id, version=w.version,
                input_commitment=run.input_commitment, transfer_ciphertext=run.transfer, shape=run.shape,
                dtype=run.dtype, requester_key=run.requester_key.public, requester=w.requester.address)
    args.update(overrides)
    return (client or w.client).infer(**args)


def submit(w: World, run: RequestRun, reply: InferenceReply) -> Any:
    return w.chain.transact(w.deployment.enclave_transfer.functions.submitResult(
        reply.claim(w.model_id).as_abi(), reply.encrypted_result, "", bytes(32), reply.signature), sender=w.node)


def requester_opens(w: World, run: RequestRun, reply: InferenceReply) -> Any:
    return open_result(run.requester_key, reply.encrypted_result, run.request_id, w.model_id, w.version)


def sample_inputs(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, IN_FEATURES)).astype(np.float32)


def summary_json(split_dir: Path) -> dict[str, Any]:
    return json.loads((split_dir / "split.json").read_text())
